"""What one document is for each source, and its language and domain.

Domains (the `domain` column): "code" (Python standard-library modules, one file each), "docs" (the Debian handbook,
one page each, and the Debian reference, one section each), "man" (one manual page each) and "fortunes" (consecutive
fortune cookies of one file, grouped to about FORTUNE_GROUP_BYTES so documents are not one-liners).

Translated handbook and reference pages are read against their English originals and lose the paragraphs that were
never translated (see `html_text.drop_untranslated`). Offensive fortunes (the `off/` folders) are left out.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

from zett.data import html_text
from zett.data.packages import CODE_LANGUAGE, HANDBOOK_LOCALES, MAN_LOCALES, Package, host_path, package_files
from zett.data.roff_text import roff_to_text

FORTUNE_GROUP_BYTES = 2048
STDLIB_PACKAGE = "python-stdlib"

_HANDBOOK = re.compile(r"/usr/share/doc/debian-handbook/html/(?P<locale>[^/]+)/(?P<page>[^/]+\.html)")
_REFERENCE = re.compile(r"/usr/share/debian-reference/(?P<page>[^/.]+)\.(?P<code>[^/.]+)\.html")
_MAN = re.compile(r"/usr/share/man/(?:(?P<locale>[^/]+)/)?man[^/]*/[^/]+")
_FORTUNES = re.compile(r"/usr/share/games/fortunes/.+")
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # fortunes-zh colours its attributions
_SKIPPED_STDLIB_FOLDERS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclasses.dataclass(frozen=True)
class Document:
  text: str
  language: str
  domain: str
  source: str
  """Package (or python-stdlib) and file, plus #N for the N-th section or fortune group of a file."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
  """One file to read: a stdlib module (path relative to the stdlib folder) or a package's file (system path)."""

  package: str
  kind: str
  path: str
  language: str


def _item_language(package: Package, path: str) -> str | None:
  """The language of one of the package's files, or None for a file that holds no documents."""
  if package.kind == "handbook":
    match = _HANDBOOK.fullmatch(path)
    return HANDBOOK_LOCALES.get(match["locale"]) if match else None
  if package.kind == "reference":
    return package.languages[0] if _REFERENCE.fullmatch(path) else None
  if package.kind == "man":
    match = _MAN.fullmatch(path)
    if not match:
      return None
    if match["locale"] is None:
      return package.languages[0] if package.languages == ("en",) else None
    return MAN_LOCALES.get(match["locale"]) if package.languages != ("en",) else None
  if package.kind == "fortunes":
    if not _FORTUNES.fullmatch(path) or path.endswith((".dat", ".u8")) or "off" in path.split("/"):
      return None
    return package.languages[0]
  raise AssertionError(package.kind)


def plan(root: str, stdlib_dir: str | None, languages: tuple[str, ...], packages: list[Package]) -> list[WorkItem]:
  """The files to read, in a fixed order (stdlib, then PACKAGES order, files sorted)."""
  items = []
  if CODE_LANGUAGE in languages and stdlib_dir is not None:
    base = Path(stdlib_dir)
    modules = sorted(
      p.relative_to(base).as_posix()
      for p in base.rglob("*.py")
      if p.is_file() and not p.is_symlink() and not _SKIPPED_STDLIB_FOLDERS & set(p.relative_to(base).parts)
    )
    items += [WorkItem(STDLIB_PACKAGE, "code", rel, CODE_LANGUAGE) for rel in modules]
  for package in packages:
    for path in package_files(root, package.name):
      language = _item_language(package, path)
      if language in languages:
        items.append(WorkItem(package.name, package.kind, path, language))
  return items


class Extractor:
  """Reads work items into documents; keeps the English originals it has parsed for the translations read next."""

  def __init__(self, root: str, stdlib_dir: str | None):
    self.root = root
    self.stdlib_dir = stdlib_dir
    self._english: dict[str, list[html_text.Block]] = {}

  def documents(self, item: WorkItem) -> Iterator[Document]:
    """Raises UnicodeDecodeError (or SyntaxError from a bad coding cookie) for a file that is not text."""
    source = f"{item.package}:{item.path}"
    if item.kind == "code":
      yield Document(self._read_module(item.path), item.language, "code", source)
    elif item.kind == "handbook":
      page = _HANDBOOK.fullmatch(item.path)
      assert page is not None  # handbook items are the paths this pattern matched
      english = f"/usr/share/doc/debian-handbook/html/en-US/{page['page']}"
      blocks = self._translated(item, self._blocks(item.path), english)
      yield Document(html_text.blocks_text(blocks), item.language, "docs", source)
    elif item.kind == "reference":
      # Cut before filtering: a section heading left in English must still start its section.
      english = _REFERENCE.sub(r"/usr/share/debian-reference/\g<page>.en.html", item.path)
      for index, section in enumerate(html_text.split_sections(self._blocks(item.path), level=2)):
        section = self._translated(item, section, english)
        yield Document(html_text.blocks_text(section), item.language, "docs", f"{source}#{index}")
    elif item.kind == "man":
      yield Document(roff_to_text(self._read_text(item.path)), item.language, "man", source)
    else:
      for index, group in enumerate(group_fortunes(split_fortunes(self._read_text(item.path)))):
        yield Document(group, item.language, "fortunes", f"{source}#{index}")

  def _read_module(self, relative: str) -> str:
    # Honour the PEP 263 coding cookie: a few stdlib test modules are deliberately Latin-1.
    assert self.stdlib_dir is not None  # code items are planned only with a standard library folder
    data = Path(self.stdlib_dir, relative).read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)

  def _read_text(self, path: str) -> str:
    data = Path(host_path(self.root, path)).read_bytes()
    if path.endswith(".gz"):
      data = gzip.decompress(data)
    return data.decode("utf-8")

  def _blocks(self, path: str) -> list[html_text.Block]:
    return html_text.html_blocks(self._read_text(path))

  def _translated(self, item: WorkItem, blocks: list[html_text.Block], english_path: str) -> list[html_text.Block]:
    if item.language == "en" or english_path == item.path:
      return blocks
    if english_path not in self._english:
      exists = os.path.isfile(host_path(self.root, english_path))
      self._english[english_path] = self._blocks(english_path) if exists else []
    return html_text.drop_untranslated(blocks, self._english[english_path])


def split_fortunes(text: str) -> list[str]:
  """The fortunes of a fortune file: blocks between lines holding only "%"."""
  fortunes, current = [], []
  for line in _ANSI_COLOUR.sub("", text).splitlines():
    if line.rstrip() == "%":
      fortunes.append("\n".join(current).strip("\n"))
      current = []
    else:
      current.append(line)
  fortunes.append("\n".join(current).strip("\n"))
  return [f for f in fortunes if f.strip()]


def group_fortunes(fortunes: list[str], group_bytes: int = FORTUNE_GROUP_BYTES) -> list[str]:
  """Consecutive fortunes joined by blank lines into groups of at least `group_bytes` (the last one may be short)."""
  groups, current, size = [], [], 0
  for fortune in fortunes:
    current.append(fortune)
    size += len(fortune.encode("utf-8")) + 2
    if size >= group_bytes:
      groups.append("\n\n".join(current))
      current, size = [], 0
  if current:
    groups.append("\n\n".join(current))
  return groups
