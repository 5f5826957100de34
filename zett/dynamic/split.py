"""Splitting texts with a base tokenizer into a `BaseBatch` (token ids, pre-token starts, token bytes)."""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np

from zett.dynamic.merge import BaseBatch

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_decoder() -> dict[str, int]:
  """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


def backend_tokenizer(tokenizer: Any):
  """The `tokenizers.Tokenizer` behind a transformers fast tokenizer (or the tokenizer itself)."""
  backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
  if not hasattr(backend, "encode_batch") or not hasattr(backend, "to_str"):
    raise TypeError(f"need a tokenizers.Tokenizer or a transformers fast tokenizer, got {type(tokenizer).__name__}")
  return backend


def vocab_bytes(tokenizer: Any) -> tuple[list[bytes], frozenset[int]]:
  """The base vocabulary as raw bytes, and the ids of special tokens.

  Byte-level BPE tokens are mapped back to bytes ("Ġ" -> b" "), SentencePiece "▁" to a space and
  byte-fallback "<0xAB>" to its byte. WordPiece word-initial pieces get a leading space and "##"
  continuations lose their prefix, so that "play" + "##ing" merges into b" playing" and stays apart
  from a word-internal b"playing".
  """
  backend = backend_tokenizer(tokenizer)
  spec = json.loads(backend.to_str())
  model_type = (spec.get("model") or {}).get("type", "")
  described = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
  byte_level = '"ByteLevel"' in described
  byte_of_char = _byte_level_decoder() if byte_level else None
  vocab = backend.get_vocab(with_added_tokens=True)
  special = frozenset(t["id"] for t in spec.get("added_tokens", []) if t.get("special"))
  out = [b""] * (max(vocab.values()) + 1)
  for token, i in vocab.items():
    if i in special:
      out[i] = token.encode("utf-8")
    elif byte_level:
      try:
        out[i] = bytes(byte_of_char[c] for c in token)
      except KeyError:  # an added, non-special token written as plain text
        out[i] = token.encode("utf-8")
    elif (m := _BYTE_FALLBACK.fullmatch(token)) is not None:
      out[i] = bytes([int(m.group(1), 16)])
    elif model_type == "WordPiece":
      prefix = (spec["model"].get("continuing_subword_prefix") or "##")
      out[i] = token[len(prefix):].encode() if token.startswith(prefix) else b" " + token.encode()
    else:
      out[i] = token.replace("\u2581", " ").encode("utf-8")
  return out, special


def split_texts(tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool = False,
                max_length: int | None = None) -> BaseBatch:
  """Tokenizes `texts` with the base tokenizer; pre-token starts come from the encodings' word ids.

  Args:
    tokenizer: a `tokenizers.Tokenizer` or a transformers fast tokenizer.
    texts: the batch.
    add_special_tokens: let the tokenizer add BOS/EOS etc. (they are never merged).
    max_length: truncate each example to this many base tokens.
  """
  backend = backend_tokenizer(tokenizer)
  id_to_bytes, special = vocab_bytes(backend)
  encodings = backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
  token_ids, starts = [], []
  for encoding in encodings:
    ids = np.asarray(encoding.ids, dtype=np.int64)
    word_ids = encoding.word_ids
    if max_length is not None:
      ids, word_ids = ids[:max_length], word_ids[:max_length]
    # A token starts a pre-token when its word id differs from its left neighbour's; specials have none.
    start = np.ones(len(ids), dtype=bool)
    for j in range(1, len(ids)):
      start[j] = word_ids[j] is None or word_ids[j] != word_ids[j - 1]
    token_ids.append(ids)
    starts.append(start)
  return BaseBatch(token_ids, starts, id_to_bytes, special)
