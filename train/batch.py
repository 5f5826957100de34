"""The batch layout the step takes, and host-side batches for fixed (evaluation) tokenizers.

Training batches come from `zett.tokenization.TokenizerSampler` (see `train.vocab.SampledTokenizers`): each step embeds
only its *batch vocabulary* (the sampled tokens in the batch plus negatives, padded to a static size), because a whole
32k vocabulary does not fit small devices (DESIGN.md, "Measured"). Evaluation embeds a fixed tokenizer's whole
vocabulary, padded to a static number of rows, so bits per byte use the full softmax.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

BATCH_KEYS = ("token_ids", "attention_mask", "surface_ids", "surface_lengths", "special_base_ids", "base_ids",
              "token_bytes", "vocab_mask", "mask_token_index")
"""Arrays of a batch; the first two are [B, T], `mask_token_index` is a scalar, the rest are [V'] / [V', L]."""

PER_SEQUENCE_KEYS = ("token_ids", "attention_mask")
SCALAR_KEYS = ("mask_token_index",)


@dataclasses.dataclass(frozen=True)
class TargetVocabulary:
  """A target tokenizer's vocabulary as the hypernetwork sees it (numpy, one row per target token id)."""

  surface_ids: np.ndarray
  """int32 [V, L] base-vocabulary ids spelling each token."""
  surface_lengths: np.ndarray
  """int32 [V] real subtokens per row."""
  special_base_ids: np.ndarray
  """int32 [V]: the base id a special token copies, -1 for ordinary tokens."""
  token_bytes: np.ndarray
  """int32 [V] UTF-8 bytes a token stands for (0 for special tokens), for bits per byte."""
  mask_token_id: int = -1
  """Target id of the mask token (masked-LM objectives), -1 if none."""

  @property
  def size(self) -> int:
    return int(self.surface_ids.shape[0])

  @property
  def base_ids(self) -> np.ndarray:
    """int32 [V]: base id of tokens that exist in the base vocabulary (a length-1 spelling), else -1."""
    single = (self.surface_lengths == 1) & (self.special_base_ids < 0)
    return np.where(single, self.surface_ids[:, 0], -1).astype(np.int32)


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def build_batch(vocab: TargetVocabulary, token_rows: Sequence[Sequence[int]], sequence_length: int,
                vocab_rows: int) -> dict[str, np.ndarray]:
  """Static-shape batch arrays (numpy) for `token_rows` (target ids; truncated / right-padded to `sequence_length`).

  The whole vocabulary is embedded, padded to `vocab_rows` rows (masked out of the softmax).
  """
  batch = len(token_rows)
  ids_bt = np.zeros((batch, sequence_length), np.int64)
  mask_bt = np.zeros((batch, sequence_length), np.int32)
  for i, row in enumerate(token_rows):
    row = np.asarray(row, np.int64)[:sequence_length]
    ids_bt[i, :len(row)] = row
    mask_bt[i, :len(row)] = 1
  if np.any(ids_bt >= vocab.size) or np.any(ids_bt < 0):
    raise ValueError(f"token ids outside the target vocabulary of {vocab.size}")

  if vocab_rows < vocab.size:
    raise ValueError(f"vocab_rows={vocab_rows} is smaller than the vocabulary ({vocab.size})")
  pad = vocab_rows - vocab.size

  def padded(array, fill):
    return np.concatenate([array, np.full((pad,) + array.shape[1:], fill, array.dtype)]).astype(np.int32)

  return {
      "token_ids": ids_bt.astype(np.int32),
      "attention_mask": mask_bt,
      "surface_ids": padded(vocab.surface_ids, 0),
      "surface_lengths": padded(vocab.surface_lengths, 0),
      "special_base_ids": padded(vocab.special_base_ids, -1),
      "base_ids": padded(vocab.base_ids, -1),
      "token_bytes": padded(vocab.token_bytes, 0),
      "vocab_mask": np.arange(vocab_rows) < vocab.size,
      "mask_token_index": np.asarray(max(vocab.mask_token_id, 0), np.int32),
  }
