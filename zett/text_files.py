"""Users' text files, read the same way by every command: UTF-8 only, never binary, byte limits that mean bytes.

`read_documents(path, max_bytes)` gives the documents of a .txt file (split at blank lines) or a .jsonl file (one
JSON object with a "text" string per line), at most `max_bytes` UTF-8 bytes of them: the limit cuts inside a
document, at a character boundary, and a large file is read only as far as the limit needs.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

from zett.errors import ZettError

_CHUNK_BYTES = 1 << 20


class TextFileError(ZettError, ValueError):
  """A text file that cannot be used; the message names the file and the problem."""


def _checked(path: Path, chunk: bytes, offset: int) -> None:
  zero = chunk.find(b"\0")
  if zero >= 0:
    raise TextFileError(f"{path}: binary data, not text (a NUL byte at offset {offset + zero})")


def read_text(path: str | os.PathLike, max_bytes: int | None = None, enough=None) -> str:
  """The file's text, strictly UTF-8. With `max_bytes`, reading stops once `enough(text)` (default: the text holds
  `max_bytes` bytes) is true; the text may still run past the limit (the caller cuts)."""
  path = Path(path)
  if not path.is_file():
    raise TextFileError(f"{path}: no such text file" if not path.exists() else f"{path}: not a file")
  decoder = codecs.getincrementaldecoder("utf-8")()
  parts: list[str] = []
  offset = 0
  with open(path, "rb") as f:
    while True:
      chunk = f.read(_CHUNK_BYTES)
      _checked(path, chunk, offset)
      try:
        parts.append(decoder.decode(chunk, final=not chunk))
      except UnicodeDecodeError as error:
        raise TextFileError(f"{path}: not UTF-8 text ({error.reason} at byte {offset + error.start})") from None
      offset += len(chunk)
      if not chunk:
        break
      if max_bytes is not None and offset >= max_bytes:
        text = "".join(parts)
        if (enough or (lambda t: len(t.encode("utf-8")) >= max_bytes))(text):
          return text
  return "".join(parts)


def check_text_prefix(path: str | os.PathLike, prefix_bytes: int = 1 << 16) -> None:
  """Raises TextFileError if the file's first `prefix_bytes` are binary or not UTF-8: a cheap check before long
  work (training) on files read later in a stream."""
  path = Path(path)
  with open(path, "rb") as f:
    head = f.read(prefix_bytes)
  _checked(path, head, 0)
  try:
    codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut by the prefix is fine
  except UnicodeDecodeError as error:
    raise TextFileError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def cut_to_bytes(texts, max_bytes: int | None) -> list[str]:
  """`texts` until `max_bytes` UTF-8 bytes; the last one is cut at a character boundary to fit."""
  out, total = [], 0
  for text in texts:
    if max_bytes is not None and total >= max_bytes:
      break
    data = text.encode("utf-8")
    if max_bytes is not None and total + len(data) > max_bytes:
      text = data[: max_bytes - total].decode("utf-8", errors="ignore")  # drops a character split by the cut
      if not text:
        break
    out.append(text)
    total += len(text.encode("utf-8"))
  return out


def _paragraphs(text: str) -> list[str]:
  return [block for block in text.split("\n\n") if block.strip()]


def _jsonl_texts(path: Path, text: str) -> list[str]:
  texts = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise TextFileError(f"{path}: line {number} is not JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise TextFileError(f'{path}: line {number} has no "text" string field')
    texts.append(record["text"])
  return texts


def read_documents(path: str | os.PathLike, max_bytes: int | None = None) -> list[str]:
  """Documents of a .txt (blank-line separated) or .jsonl ("text" field) file, cut to `max_bytes` bytes in all."""
  path = Path(path)
  if path.suffix == ".jsonl":
    texts = _jsonl_texts(path, read_text(path))
  else:
    # Blank lines between documents do not count toward the limit: read until the documents themselves fill it.
    def enough(text: str) -> bool:
      assert max_bytes is not None  # read_text asks only when there is a limit
      return sum(len(p.encode("utf-8")) for p in _paragraphs(text)) >= max_bytes

    texts = _paragraphs(read_text(path, max_bytes, enough))
  return cut_to_bytes(texts, max_bytes)
