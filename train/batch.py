"""Host-side batches: token rows of some target tokenizer -> static-shape arrays over a per-step batch vocabulary.

The hypernetwork cannot embed a whole 32k sampled vocabulary every step on small devices (see DESIGN.md, "Measured"),
so each step embeds only the *batch vocabulary*: the target tokens that occur in the batch, plus randomly drawn
negatives of the same tokenizer for the softmax, padded to a static size. Token ids are remapped into it.
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


def batch_vocab_size(requested: int, vocab_size: int, batch_size: int, sequence_length: int, multiple: int) -> int:
  """Static size of the batch vocabulary: the request (0 = whole vocab), never fewer rows than tokens in a batch."""
  size = requested or vocab_size
  # A batch can never hold more distinct tokens than B*T (+1 for the mask token), so this size cannot overflow.
  size = min(size, vocab_size, batch_size * sequence_length + 1) if requested else size
  # Rounded up to the mesh's "data" size because vocabulary rows are split over it.
  return round_up(max(size, 1), multiple)


def build_batch(vocab: TargetVocabulary, token_rows: Sequence[Sequence[int]], sequence_length: int,
                vocab_rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Static-shape batch arrays (numpy) for `token_rows` (target ids; truncated / right-padded to `sequence_length`).

  Args:
    vocab_rows: static size V' of the batch vocabulary; if it is >= vocab.size the whole vocabulary is used in order.
    rng: draws the negatives (seeded per step by the caller, so batches are reproducible).
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

  if vocab_rows >= vocab.size:
    rows_v = np.arange(vocab.size)
    local_ids_bt = ids_bt
  else:
    used = np.unique(ids_bt[mask_bt > 0])
    if vocab.mask_token_id >= 0:
      used = np.union1d(used, [vocab.mask_token_id])
    if len(used) > vocab_rows:
      raise ValueError(f"the batch uses {len(used)} distinct tokens, more than the batch vocabulary of {vocab_rows} "
                       "rows (raise sampler.batch_vocab_size)")
    rest = np.setdiff1d(np.arange(vocab.size), used, assume_unique=True)
    negatives = rng.choice(rest, size=min(vocab_rows - len(used), len(rest)), replace=False)
    rows_v = np.concatenate([used, np.sort(negatives)])
    lookup = np.zeros(vocab.size, np.int64)
    lookup[rows_v] = np.arange(len(rows_v))
    local_ids_bt = np.where(mask_bt > 0, lookup[ids_bt], 0)

  real = len(rows_v)
  pad = vocab_rows - real if vocab_rows >= real else 0
  def take(array, fill):
    taken = array[rows_v]
    if pad:
      taken = np.concatenate([taken, np.full((pad,) + taken.shape[1:], fill, taken.dtype)])
    return taken.astype(np.int32)
  mask_index = -1
  if vocab.mask_token_id >= 0:
    mask_index = int(np.searchsorted(rows_v, vocab.mask_token_id)) if vocab_rows >= vocab.size else \
        int(np.nonzero(rows_v == vocab.mask_token_id)[0][0])
  return {
      "token_ids": local_ids_bt.astype(np.int32),
      "attention_mask": mask_bt,
      "surface_ids": take(vocab.surface_ids, 0),
      "surface_lengths": take(vocab.surface_lengths, 0),
      "special_base_ids": take(vocab.special_base_ids, -1),
      "base_ids": take(vocab.base_ids, -1),
      "token_bytes": take(vocab.token_bytes, 0),
      "vocab_mask": np.arange(real + pad) < real,
      "mask_token_index": np.asarray(max(mask_index, 0), np.int32),
  }
