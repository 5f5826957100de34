"""The batch layout the step takes, and host-side batches for fixed (evaluation) tokenizers.

Training batches come from `zett.tokenization.TokenizerSampler` (see `train.vocab.SampledTokenizers`): each step embeds
only its *batch vocabulary* (the sampled tokens in the batch plus negatives, padded to a static size), because a whole
32k vocabulary does not fit small devices (DESIGN.md, "Measured"). Evaluation embeds a fixed tokenizer's whole
vocabulary, padded to a static number of rows, so bits per byte use the full softmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from zett.config import ConfigError

BATCH_KEYS = (
  "token_ids",
  "attention_mask",
  "surface_ids",
  "surface_lengths",
  "special_base_ids",
  "base_ids",
  "token_bytes",
  "vocab_mask",
  "logit_offsets",
  "mask_token_index",
  "vocab_size",
)
"""Arrays of a batch; the first two are [B, T], `mask_token_index` and `vocab_size` (int32: the size of the whole
vocabulary the batch vocabulary stands for) are scalars, the rest are [V'] / [V', L]."""

PER_SEQUENCE_KEYS = ("token_ids", "attention_mask")
SCALAR_KEYS = ("mask_token_index", "vocab_size")


@dataclasses.dataclass(frozen=True)
class TrainingVocabulary:
  """A target tokenizer's vocabulary as training batches and the loss see it (numpy, one row per target token id).

  Not `zett.transfer_vocab.TargetVocabulary`: that one carries the target tokenizer a transfer exports; this one
  the byte lengths (bits per byte) and the mask id that training needs.
  """

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


def build_batch(
  vocab: TrainingVocabulary, token_rows: Sequence[Sequence[int]], sequence_length: int, vocab_rows: int
) -> dict[str, np.ndarray]:
  """Static-shape batch arrays (numpy) for `token_rows` (target ids; truncated / right-padded to `sequence_length`).

  The whole vocabulary is embedded, padded to `vocab_rows` rows (masked out of the softmax).
  """
  batch = len(token_rows)
  ids_bt = np.zeros((batch, sequence_length), np.int64)
  mask_bt = np.zeros((batch, sequence_length), np.int32)
  for i, row in enumerate(token_rows):
    row = np.asarray(row, np.int64)[:sequence_length]
    ids_bt[i, : len(row)] = row
    mask_bt[i, : len(row)] = 1
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
    "logit_offsets": np.zeros(vocab_rows, np.float32),
    "mask_token_index": np.asarray(max(vocab.mask_token_id, 0), np.int32),
    "vocab_size": np.asarray(vocab.size, np.int32),
  }


def fit_encoder_buckets(batch: dict[str, np.ndarray], hypernet_config, buckets) -> dict[str, np.ndarray]:
  """Leaves out of the softmax (and of the encoder) the negative rows that do not fit the encoder buckets.

  Negatives are a sample anyway; the rows the batch's text uses must all fit, or the configured capacities are too
  small for this data (a clear error, never a silent change of what is trained on).
  """
  from zett.hypernet.model import bucket_classes, bucket_overflow, check_buckets

  lengths = batch["surface_lengths"]
  overflow = bucket_overflow(hypernet_config, lengths, buckets)
  if not any(overflow):
    return batch
  used = np.zeros(lengths.shape[0], bool)
  used[batch["token_ids"][batch["attention_mask"] > 0]] = True
  classes = bucket_classes(hypernet_config, lengths, buckets)
  lengths, vocab_mask = lengths.copy(), batch["vocab_mask"].copy()
  lower = 0
  for bucket, ((length, capacity), excess) in enumerate(zip(check_buckets(hypernet_config, buckets), overflow)):
    in_bucket = classes == bucket + 1
    if excess:
      droppable = np.flatnonzero(in_bucket & ~used & (batch["special_base_ids"] < 0))
      if droppable.size < excess:
        raise ConfigError(
          f"the batch's text uses {int((in_bucket & used).sum())} tokens of surface length "
          f"{lower + 1}..{length}, more than that encoder bucket's capacity {capacity}; raise "
          "hypernet.encoder_buckets"
        )
      dropped = droppable[-excess:]
      lengths[dropped] = 0
      vocab_mask[dropped] = False
    lower = length
  return dict(batch, surface_lengths=lengths, vocab_mask=vocab_mask)


def negative_logit_offsets(
  drawn: dict[str, np.ndarray],
  fitted: dict[str, np.ndarray],
  sampled_vocab_size: int,
  hypernet_config=None,
  buckets=None,
) -> np.ndarray:
  """float32 [V']: log(1 / chance of being in the batch vocabulary) for each negative row; 0 for used rows, specials
  and padding. Adding it to the logits makes the batch-vocabulary softmax estimate the whole sampled vocabulary's.

  Negatives are drawn uniformly from the sampled vocabulary's unused tokens (`drawn`: the batch as sampled);
  `fit_encoder_buckets` may then leave some out per surface-length class (`fitted`), which lowers that class's
  chance by kept / drawn.
  """
  from zett.hypernet.model import bucket_classes

  rows = drawn["vocab_mask"].shape[0]
  used = np.zeros(rows, bool)
  used[drawn["token_ids"][drawn["attention_mask"] > 0]] = True
  used |= drawn["special_base_ids"] >= 0
  negatives = drawn["vocab_mask"] & ~used
  offsets = np.zeros(rows, np.float32)
  if not negatives.any():
    return offsets
  free = sampled_vocab_size - int((drawn["vocab_mask"] & used).sum())
  kept = negatives & fitted["vocab_mask"]
  # Without buckets every negative is in one class; with them, the rows the encoder never sees and one per bucket.
  if buckets:
    assert hypernet_config is not None, "encoder buckets need the hypernetwork config"
    classes = bucket_classes(hypernet_config, drawn["surface_lengths"], buckets)
  else:
    classes = np.zeros(rows, int)
  for c in np.unique(classes[kept]):
    in_class = classes == c
    offsets[kept & in_class] = np.log(free / negatives.sum() * (negatives & in_class).sum() / (kept & in_class).sum())
  return offsets
