"""A sampled vocabulary as a standalone UnigramLM `Tokenizer`, and the byte-fallback score both it and the sampler's
own segmentation give the 256 byte pieces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from zett.tokenization import byte_level
from zett.tokenization._substrings import PRETOKEN_PATTERNS
from zett.tokenization.tokenizer import Tokenizer, from_backend

BYTE_PIECES = tuple(byte_level.bytes_to_unicode()[b] for b in range(256))


def byte_score(scores: np.ndarray) -> float:
  # Bytes are the fallback of last resort: dearer than any piece.
  return (float(scores.min()) if scores.size else 0.0) - 10.0


def unigram_tokenizer(
  special_pieces: Sequence[str],
  special_base_ids: np.ndarray,
  base_roles: Mapping[str, int],
  spellings: Sequence[str],
  scores: np.ndarray,
  name: str,
  pretokenizer: str = "gpt2",
) -> Tokenizer:
  """A standalone zett Tokenizer for a sampled vocabulary, ids as in `SampledBatch.pieces`.

  It encodes text exactly as `TokenizerSampler.sample` does, except that it also matches special-token text.

  Args:
    special_pieces: content of the base's special tokens, in sampled-id order.
    special_base_ids: base id of each special token.
    base_roles: the base tokenizer's roles (bos, eos, ...) as base ids.
    spellings: byte-level spelling of each sampled piece.
    scores: log-prob score of each sampled piece.
    pretokenizer: the `PRETOKEN_PATTERNS` split the sampler pre-tokenized with.
  """
  fallback = byte_score(scores)
  vocab = [(content, fallback) for content in special_pieces]
  vocab += [(piece, fallback) for piece in BYTE_PIECES] + list(zip(spellings, scores.tolist()))
  backend = tokenizers.Tokenizer(models.Unigram(vocab, None, False))
  backend.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(tokenizers.Regex(PRETOKEN_PATTERNS[pretokenizer]), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([tokenizers.AddedToken(c, special=True, normalized=False) for c in special_pieces])
  row_of_base = {int(b): i for i, b in enumerate(special_base_ids)}
  roles = {role: row_of_base[token_id] for role, token_id in base_roles.items() if token_id in row_of_base}
  return from_backend(backend, name, roles)
