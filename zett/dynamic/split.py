"""Splitting texts with a base tokenizer into a `BaseBatch` (token ids, pre-token starts, token bytes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tokenizers

from zett.dynamic.batch import BaseBatch
from zett.tokenization import Tokenizer, TokenizerError, load_tokenizer

_VOCAB_CACHE: dict[int, tuple[Any, list[bytes], frozenset[int]]] = {}


def backend_tokenizer(tokenizer: Any) -> tokenizers.Tokenizer:
  """The `tokenizers.Tokenizer` behind a zett `Tokenizer` (a model's), or itself; any other form a `load_tokenizer`
  takes (a transformers fast tokenizer) is loaded first."""
  if isinstance(tokenizer, tokenizers.Tokenizer):
    return tokenizer
  if isinstance(tokenizer, Tokenizer):
    return tokenizer.backend
  try:
    return load_tokenizer(tokenizer).backend
  except TokenizerError:
    raise TypeError(
      f"need a zett Tokenizer, a tokenizers.Tokenizer or a transformers fast tokenizer, got {type(tokenizer).__name__}"
    ) from None


def vocab_bytes(tokenizer: Any) -> tuple[list[bytes], frozenset[int]]:
  """The base vocabulary as raw bytes, and the ids of special tokens.

  Uses the canonical byte view of `zett.tokenization.byte_level`: byte-level "Ġ" -> b" ",
  SentencePiece "▁" -> b" " and "<0xAB>" -> its byte, WordPiece word-initial pieces get a leading
  space and "##" continuations lose their prefix (so "play" + "##ing" merges into b" playing").
  Cached per tokenizer object (the vocabulary of a real model takes a while to convert).
  """
  from zett.tokenization.byte_level import detect_kind, vocabulary_bytes
  from zett.tokenization.tokenizer import check_dense_ids

  if isinstance(tokenizer, Tokenizer):
    return list(tokenizer.vocab_bytes), frozenset(tokenizer.special_ids)
  backend = backend_tokenizer(tokenizer)
  cached = _VOCAB_CACHE.get(id(backend))
  if cached is not None and cached[0] is backend:
    return cached[1], cached[2]
  spec = json.loads(backend.to_str())
  vocab = backend.get_vocab(with_added_tokens=True)
  check_dense_ids(vocab, "base tokenizer")
  id_to_piece: list[str | None] = [None] * (max(vocab.values()) + 1)
  for piece, i in vocab.items():
    id_to_piece[i] = piece
  special = frozenset(t["id"] for t in spec.get("added_tokens", []) if t.get("special"))
  prefix = (spec.get("model") or {}).get("continuing_subword_prefix") or "##"
  out = vocabulary_bytes(id_to_piece, detect_kind(spec), set(special), prefix)
  if len(_VOCAB_CACHE) >= 8:
    _VOCAB_CACHE.pop(next(iter(_VOCAB_CACHE)))
  _VOCAB_CACHE[id(backend)] = (backend, out, special)
  return out, special


def split_texts(
  tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool = False, max_length: int | None = None
) -> BaseBatch:
  """Tokenizes `texts` with the base tokenizer; pre-token starts come from the encodings' word ids.

  Args:
    tokenizer: the base model's `Tokenizer` or a `tokenizers.Tokenizer` (see `backend_tokenizer`).
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
