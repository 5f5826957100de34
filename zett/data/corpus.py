"""Build the training / held-out corpus from text on the machine: normalise, deduplicate, split, write parquet.

The output folder holds one zstd parquet file per language (`<lang>.parquet`) and one per programming language
(`code-python.parquet`), each with the columns text, language, domain, source, split; and `summary.json` with the
counts, the recipe (package versions, heldout_permille, versions of zett, Python and pyarrow) and each file's sha256.

The split is `train.data.is_heldout` on the stored text, the very test training applies to every document it reads,
so a training config with the same `data.heldout_permille` holds out exactly the rows marked "heldout" here.
Rows are ordered by the sha256 of their text: a fixed shuffle, so training does not read one package (or one
alphabet of stdlib modules) after another; sha256 is independent of the blake2b bucket of the split, so held-out
rows are spread through the file rather than collected at one end. The same inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sysconfig
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import zett
from zett.data.documents import STDLIB_PACKAGE, Document, Extractor, plan
from zett.data.packages import CODE_LANGUAGE, KNOWN_LANGUAGES, CorpusError, check_installed, packages_for
from zett.sha256 import file_sha256
from zett.train.data import is_heldout

MIN_DOCUMENT_BYTES = 200
SPLITS = ("train", "heldout")
_COLUMNS = ("text", "language", "domain", "source", "split")
_ROWS_PER_GROUP = 1024
_ZSTD_LEVEL = 9

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # after newlines are normalised: all C0 but \t and \n
_TRAILING_BLANKS = re.compile(r"[ \t\u00a0\u3000]+$", re.M)
_EXCESS_BLANK_LINES = re.compile(r"\n{4,}")


def normalise(text: str) -> str:
  """NFC, \\n newlines, no control characters but tab, no trailing blanks, at most two blank lines in a row."""
  text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
  text = _TRAILING_BLANKS.sub("", _CONTROL.sub("", text))
  return _EXCESS_BLANK_LINES.sub("\n\n\n", text).strip("\n")


def output_name(document: Document) -> str:
  """The parquet file a document goes to: `<language>.parquet`, or `code-<language>.parquet` for code."""
  return f"code-{document.language}.parquet" if document.domain == "code" else f"{document.language}.parquet"


def resolve_languages(languages: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
  """Known language codes from a comma-separated string or a list; None or "all" = every known language."""
  if languages is None or languages == "all":
    return KNOWN_LANGUAGES
  if isinstance(languages, str):
    languages = [code.strip() for code in languages.split(",") if code.strip()]
  unknown = sorted(set(languages) - set(KNOWN_LANGUAGES))
  if unknown or not languages:
    raise CorpusError(
      f"unknown language(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(KNOWN_LANGUAGES)}"
    )
  return tuple(code for code in KNOWN_LANGUAGES if code in languages)


def _collect(items, extractor: Extractor, heldout_permille: int, progress: bool):
  """Reads, normalises and deduplicates; returns rows per output file and the dropped counts by reason."""
  seen: set[bytes] = set()
  rows: dict[str, list[tuple[str, ...]]] = {}
  dropped = Counter()
  for item in tqdm(items, desc="reading", unit="file", disable=not progress, mininterval=1.0):
    try:
      documents = list(extractor.documents(item))
    except (UnicodeDecodeError, SyntaxError):  # SyntaxError: a stdlib module with an unknown coding cookie
      dropped["not_text"] += 1
      continue
    for document in documents:
      text = normalise(document.text)
      if len(text.encode("utf-8")) < MIN_DOCUMENT_BYTES:
        dropped["tiny"] += 1
        continue
      digest = hashlib.sha256(text.encode("utf-8")).digest()
      if digest in seen:
        dropped["duplicate"] += 1
        continue
      seen.add(digest)
      split = "heldout" if is_heldout(text, heldout_permille) else "train"
      rows.setdefault(output_name(document), []).append(
        (text, document.language, document.domain, document.source, split)
      )
  return rows, dropped


def _write_parquet(rows: list[tuple[str, ...]], path: Path) -> None:
  rows = sorted(rows, key=lambda row: hashlib.sha256(row[0].encode("utf-8")).digest())
  schema = pa.schema([(name, pa.string()) for name in _COLUMNS])
  table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(_COLUMNS)}, schema=schema)
  pq.write_table(
    table,
    path,
    compression="zstd",
    compression_level=_ZSTD_LEVEL,
    row_group_size=_ROWS_PER_GROUP,
    # pyarrow leaves use_dictionary unannotated with default True, so pyright takes it to be a bool; it also takes
    # a list of columns (pyarrow's documentation).
    use_dictionary=["language", "domain", "split"],  # pyright: ignore[reportArgumentType]
  )


def _counts(rows: list[tuple[str, ...]]) -> dict[str, dict[str, int]]:
  counts = {split: {"documents": 0, "bytes": 0} for split in SPLITS}
  for text, *_, split in rows:
    counts[split]["documents"] += 1
    counts[split]["bytes"] += len(text.encode("utf-8"))
  return counts


def _replace_folder(built: Path, out: Path) -> None:
  """Moves the finished temp folder into place; a previous corpus there is replaced only once the new one is whole."""
  if not out.exists():
    os.replace(built, out)
    return
  previous = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
  os.replace(out, previous / out.name)
  os.replace(built, out)
  shutil.rmtree(previous)


def prepare_corpus(
  out: str | os.PathLike,
  languages: str | list[str] | tuple[str, ...] | None = None,
  heldout_permille: int = 20,
  root: str = "/",
  stdlib_dir: str | None = None,
  progress: bool = True,
) -> dict:
  """Builds the corpus into the folder `out` (replacing a corpus already there) and returns its summary.

  Args:
    languages: codes to include ("python" is the stdlib code); default every known language.
    heldout_permille: passed to `train.data.is_heldout`; give training the same `data.heldout_permille`.
    root: the file system root holding the Debian packages and their dpkg database (tests use a fake tree).
    stdlib_dir: the Python standard library folder; default this interpreter's.

  Raises:
    CorpusError: an unknown language, a missing Debian package (the message holds the install command), an output
      folder that is not a corpus, or no documents at all.
  """
  if not 0 <= heldout_permille < 1000:
    raise CorpusError(f"heldout_permille must be in [0, 1000), got {heldout_permille}")
  selected = resolve_languages(languages)
  versions = check_installed(root, selected)
  stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
  out = Path(out).resolve()
  if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "summary.json").is_file())):
    raise CorpusError(f"{out} exists and is not a corpus folder (no summary.json); choose another --out")

  started = time.monotonic()
  items = plan(root, stdlib_dir, selected, packages_for(selected))
  rows, dropped = _collect(items, Extractor(root, stdlib_dir), heldout_permille, progress)
  if not rows:
    raise CorpusError(f"no documents for languages {', '.join(selected)} (read {len(items)} files)")

  out.parent.mkdir(parents=True, exist_ok=True)
  building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
  try:
    files, languages_summary = {}, {}
    for name in tqdm(sorted(rows), desc="writing", unit="file", disable=not progress):
      _write_parquet(rows[name], building / name)
      first = rows[name][0]
      counts = _counts(rows[name])
      files[name] = {
        "sha256": file_sha256(building / name),
        "language": first[1],
        "splits": counts,
        "domains": dict(sorted(Counter(row[2] for row in rows[name]).items())),
      }
      languages_summary[first[1]] = counts
    summary = {
      "files": files,
      "languages": dict(sorted(languages_summary.items())),
      "dropped": dict(sorted(dropped.items())),
      "recipe": {
        "zett_version": zett.__version__,
        "heldout_permille": heldout_permille,
        "min_document_bytes": MIN_DOCUMENT_BYTES,
        "selected_languages": list(selected),
        "packages": {STDLIB_PACKAGE: platform.python_version(), **versions} if CODE_LANGUAGE in selected else versions,
        "pyarrow_version": pa.__version__,
        "zstd_level": _ZSTD_LEVEL,
      },
    }
    (building / "summary.json").write_text(
      json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    building.chmod(0o755)  # mkdtemp makes it 0700
    _replace_folder(building, out)
  except BaseException:
    shutil.rmtree(building, ignore_errors=True)
    raise
  summary["wall_seconds"] = round(time.monotonic() - started, 1)  # returned, not written: the files stay identical
  return summary
