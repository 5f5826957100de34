"""The canonical byte-level view of a vocabulary: every token id as the exact bytes it stands for.

Tokenizers spell their vocabularies in different alphabets: byte-level BPE (GPT-2, Llama 3, Qwen,
SmolLM2) writes bytes as printable characters (`Ġ` is the space byte), SentencePiece writes spaces
as `▁` and unknown characters as `<0xNN>` byte pieces, WordPiece marks word-internal pieces with
`##`. The hypernetwork needs one view of all of them: the bytes of each token. Printing uses the
GPT-2 byte alphabet so every byte sequence has a visible, reversible spelling.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from zett.errors import ZettError


class TokenizerError(ZettError, ValueError):
  """A tokenizer file or object that cannot be used; the message names the file and the problem."""


class ModelKind(enum.StrEnum):
  """How a tokenizer's model spells its vocabulary (which decides the token -> bytes rule)."""

  BYTE_LEVEL_BPE = "byte_level_bpe"
  """BPE over the GPT-2 byte alphabet (GPT-2, Llama 3, Qwen, SmolLM2, tiktoken/tekken files)."""
  SENTENCEPIECE_BPE = "sentencepiece_bpe"
  """BPE over characters with `▁` for space and optional `<0xNN>` byte fallback (Llama 2, Mistral)."""
  UNIGRAM = "unigram"
  """UnigramLM over characters with `▁` for space (XLM-R, T5, our sampled tokenizers use BYTE_LEVEL)."""
  BYTE_LEVEL_UNIGRAM = "byte_level_unigram"
  """UnigramLM over the GPT-2 byte alphabet (the per-batch sampled tokenizers)."""
  WORDPIECE = "wordpiece"
  """WordPiece (BERT): `##` marks a word-internal piece; a word-initial piece reads as b" " + piece."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character table (256 entries)."""
  printable = (
    list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  )
  codes = printable[:]
  extra = 0
  for byte in range(256):
    if byte not in printable:
      printable.append(byte)
      codes.append(256 + extra)
      extra += 1
  return {byte: chr(code) for byte, code in zip(printable, codes)}


@functools.cache
def unicode_to_bytes() -> dict[str, int]:
  return {char: byte for byte, char in bytes_to_unicode().items()}


@functools.cache
def _latin1_to_byte_level_table() -> dict[int, str]:
  # str.translate table: decoding bytes as latin-1 gives one char per byte, translate maps it.
  return {byte: char for byte, char in bytes_to_unicode().items()}


def to_byte_level(data: bytes) -> str:
  """Bytes -> their GPT-2 byte-alphabet spelling (one printable character per byte)."""
  return data.decode("latin-1").translate(_latin1_to_byte_level_table())


@functools.cache
def _byte_level_to_latin1_table() -> dict[int, int]:
  return {ord(char): byte for byte, char in bytes_to_unicode().items()}


def from_byte_level(text: str) -> bytes:
  """GPT-2 byte-alphabet spelling -> bytes. Raises TokenizerError on a character outside it."""
  bad = _NOT_BYTE_LEVEL.search(text)
  if bad is not None:
    raise TokenizerError(f"{text!r} is not in the GPT-2 byte alphabet (character {bad.group()!r})")
  return text.translate(_byte_level_to_latin1_table()).encode("latin-1")


# Characters outside the GPT-2 byte alphabet: the bytes it remaps (controls, space, NBSP, soft
# hyphen) and everything above U+0143.
_NOT_BYTE_LEVEL = re.compile("[\x00-\x20\x7f-\xa0\xad]|[^\x00-\u0143]")


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_fallback_value(piece: str) -> int | None:
  """The byte a SentencePiece `<0xNN>` byte piece stands for, else None."""
  match = _BYTE_PIECE.match(piece)
  return int(match.group(1), 16) if match else None


def detect_kind(tokenizer_json: Mapping[str, Any]) -> ModelKind:
  """Which spelling a `tokenizers` JSON uses, from its model type, pre-tokenizer and decoder."""
  model = tokenizer_json.get("model") or {}
  model_type = model.get("type")
  if model_type is None and "merges" in model:
    model_type = "BPE"
  components = repr(tokenizer_json.get("pre_tokenizer")) + repr(tokenizer_json.get("decoder"))
  byte_level = "'ByteLevel'" in components
  if model_type == "BPE":
    return ModelKind.BYTE_LEVEL_BPE if byte_level else ModelKind.SENTENCEPIECE_BPE
  if model_type == "Unigram":
    return ModelKind.BYTE_LEVEL_UNIGRAM if byte_level else ModelKind.UNIGRAM
  if model_type == "WordPiece":
    return ModelKind.WORDPIECE
  raise TokenizerError(f"unsupported tokenizer model type {model_type!r} (supported: BPE, Unigram, WordPiece)")


def piece_to_bytes(piece: str, kind: ModelKind, continuing_prefix: str = "##") -> bytes:
  """One model vocabulary piece -> the bytes it stands for under `kind`'s spelling rule."""
  if kind in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM):
    table = unicode_to_bytes()
    if all(char in table for char in piece):
      return bytes(table[char] for char in piece)
    return piece.encode("utf-8")  # e.g. an added token written in plain text
  if kind in (ModelKind.SENTENCEPIECE_BPE, ModelKind.UNIGRAM):
    byte = byte_fallback_value(piece)
    if byte is not None:
      return bytes([byte])
    return piece.replace("▁", " ").encode("utf-8")
  if kind == ModelKind.WORDPIECE:
    if continuing_prefix and piece.startswith(continuing_prefix) and len(piece) > len(continuing_prefix):
      return piece[len(continuing_prefix) :].encode("utf-8")
    # Word-initial WordPiece tokens follow a word boundary; spell them like `▁x` / `Ġx`.
    return b" " + piece.encode("utf-8")
  raise TokenizerError(f"unknown model kind {kind!r}")


def vocabulary_bytes(
  id_to_piece: Sequence[str | None], kind: ModelKind, special_ids: set[int], continuing_prefix: str = "##"
) -> list[bytes]:
  """Bytes for every id; special tokens give their UTF-8 content (callers keep them apart)."""
  result = []
  for token_id, piece in enumerate(id_to_piece):
    if piece is None:
      result.append(b"")
    elif token_id in special_ids:
      result.append(piece.encode("utf-8"))
    else:
      result.append(piece_to_bytes(piece, kind, continuing_prefix))
  return result


def printable(data: bytes) -> str:
  """Bytes spelled in the GPT-2 byte alphabet, for logs and reports."""
  return to_byte_level(data)
