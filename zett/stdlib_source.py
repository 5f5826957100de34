"""Python standard-library source as offline text: on disk with every Python, so demos and tests never download.

The quickstart, the tiny demo engine, the tiny training base and the tests train small tokenizers on it.
"""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path


def stdlib_folder() -> Path:
  return Path(sysconfig.get_paths()["stdlib"])


@functools.cache
def stdlib_text(names: tuple[str, ...], skip_missing: bool = False) -> str:
  """The source of the named stdlib files ("textwrap.py", "json/decoder.py"), joined by blank lines.

  Args:
    skip_missing: leave out files this Python lacks instead of failing (for material that only needs to be text).
  """
  folder = stdlib_folder()
  return "\n\n".join(
    (folder / name).read_text(encoding="utf-8") for name in names if not skip_missing or (folder / name).is_file()
  )


@functools.cache
def stdlib_texts_up_to(max_bytes: int) -> tuple[str, ...]:
  """Whole top-level stdlib modules in name order, until together they hold at least `max_bytes` characters."""
  texts, total = [], 0
  for path in sorted(stdlib_folder().glob("*.py")):
    text = path.read_text(encoding="utf-8", errors="replace")
    texts.append(text)
    total += len(text)
    if total >= max_bytes:
      break
  return tuple(texts)
