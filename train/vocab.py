"""Target tokenizers for training and evaluation, as `TrainingVocabulary` + an encoder.

Training draws a fresh tokenizer per batch through `zett.tokenization`'s `TokenizerSampler`; evaluation uses fixed
tokenizers (the base's own, held-out ones named in the config, and sampled ones with fixed seeds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zett.config import ConfigError
from zett.train.batch import TrainingVocabulary, fit_encoder_buckets, negative_logit_offsets

_MASK_CONTENTS = ("<mask>", "[MASK]", "<MASK>")


@dataclasses.dataclass(frozen=True)
class EncodedVocabulary:
  """A target tokenizer ready for batching: its vocabulary view and a text -> ids function."""

  name: str
  vocab: TrainingVocabulary
  encode: Callable[[Sequence[str]], list[list[int]]]


def training_base_tokenizer(base_model, spec: str | None = None):
  """The tokenizer training spells with: `spec` (model.tokenizer in the config) if set, else the base's own."""
  from zett.tokenization import load_tokenizer

  if spec:
    return load_tokenizer(spec)
  if base_model.tokenizer is None:
    raise ConfigError(f"base model {base_model.name} comes without a tokenizer; set model.tokenizer in the config")
  return base_model.tokenizer


def training_vocabulary(target, base, surface_max_length: int) -> TrainingVocabulary:
  """Surface forms + byte lengths of every token of `target` (a `Tokenizer`) in `base` subtokens."""
  from zett.tokenization import surface_forms

  forms = surface_forms(target, base, max_length=surface_max_length)
  special = np.zeros(target.vocab_size, bool)
  special[sorted(target.special_ids)] = True
  token_bytes = np.array([0 if special[i] else len(b) for i, b in enumerate(target.vocab_bytes)], np.int32)
  pieces = target.id_to_piece
  mask_ids = [i for i in sorted(target.special_ids) if pieces[i] in _MASK_CONTENTS]
  return TrainingVocabulary(
    surface_ids=forms.ids.astype(np.int32),
    surface_lengths=forms.lengths.astype(np.int32),
    special_base_ids=forms.special_base_ids.astype(np.int32),
    token_bytes=token_bytes,
    mask_token_id=mask_ids[0] if mask_ids else -1,
  )


def encoded_vocabulary(name: str, target, base, surface_max_length: int) -> EncodedVocabulary:
  vocab = training_vocabulary(target, base, surface_max_length)
  return EncodedVocabulary(name, vocab, lambda texts: target.encode_batch(list(texts)))


def fixed_vocabularies(specs: Sequence[str], base, surface_max_length: int) -> list[EncodedVocabulary]:
  from zett.tokenization import load_tokenizer

  return [encoded_vocabulary(spec, load_tokenizer(spec), base, surface_max_length) for spec in specs]


def check_tokenizer_specs(specs: Sequence[str]) -> None:
  """Fails fast on a held-out tokenizer path that does not exist (before anything is compiled)."""
  import os

  for spec in specs:
    if (
      spec.startswith(("/", "./", "../")) or spec.endswith((".json", ".model", ".gguf", ".tiktoken"))
    ) and not os.path.exists(spec):
      raise ConfigError(f"eval.heldout_tokenizers: {spec} does not exist")


class SampledTokenizers:
  """Adapter over `zett.tokenization.TokenizerSampler`: a fresh tokenizer per batch, batches in our key names.

  Held-out sampled tokenizers come from a second sampler whose window holds the held-out text, so they are the same
  at every evaluation, before the first step and after a resumption.
  """

  def __init__(
    self,
    sampler,
    eval_sampler,
    base,
    surface_max_length: int,
    masked: bool,
    hypernet_config=None,
    encoder_buckets=None,
    weight_negatives: bool = False,
  ):
    self._weight_negatives = weight_negatives
    self._hypernet_config = hypernet_config
    self._encoder_buckets = encoder_buckets
    self._sampler = sampler
    self._eval_sampler = eval_sampler
    self._base = base
    self._surface_max_length = surface_max_length
    self._mask_row = -1
    if masked:
      rows = [i for i, b in enumerate(sampler.special_base_ids.tolist()) if base.id_to_piece[b] in _MASK_CONTENTS]
      if not rows:
        raise ConfigError(
          f"base tokenizer {base.name} has no mask token (one of {_MASK_CONTENTS}); the masked-LM loss needs one"
        )
      self._mask_row = rows[0]

  @property
  def rows(self) -> int:
    return int(self._sampler.rows)

  def sample_batch(self, texts: Sequence[str], step: int) -> dict[str, np.ndarray]:
    """This step's texts under a freshly sampled tokenizer, as `train.batch.BATCH_KEYS` arrays."""
    sampled = self._sampler.sample(texts, step)
    batch = {
      "token_ids": sampled.input_ids.astype(np.int32),
      "attention_mask": sampled.attention_mask.astype(np.int32),
      "surface_ids": sampled.vocab_surface_ids.astype(np.int32),
      "surface_lengths": sampled.vocab_surface_lengths.astype(np.int32),
      "special_base_ids": sampled.special_base_ids.astype(np.int32),
      "base_ids": sampled.base_token_ids.astype(np.int32),
      "token_bytes": sampled.token_bytes.astype(np.int32),
      "vocab_mask": sampled.vocab_mask.astype(bool),
      # Specials are always the first rows of a sampled vocabulary, in the sampler's order.
      "mask_token_index": np.asarray(max(self._mask_row, 0), np.int32),
      "vocab_size": np.asarray(sampled.sampled_vocab_size, np.int32),
    }
    drawn = batch
    if self._encoder_buckets:
      batch = fit_encoder_buckets(batch, self._hypernet_config, self._encoder_buckets)
    batch["logit_offsets"] = (
      negative_logit_offsets(drawn, batch, sampled.sampled_vocab_size, self._hypernet_config, self._encoder_buckets)
      if self._weight_negatives
      else np.zeros(batch["vocab_mask"].shape, np.float32)
    )
    return batch

  def eval_vocabulary(self, index: int) -> EncodedVocabulary:
    tokenizer = self._eval_sampler.sample_fixed(index)
    return encoded_vocabulary(f"sampled-{index}", tokenizer, self._base, self._surface_max_length)

  def get_state(self) -> dict:
    return self._sampler.get_state()

  def set_state(self, state: dict) -> None:
    self._sampler.set_state(state)


def make_sampler(
  config,
  base,
  surface_max_length: int,
  sequence_length: int,
  rows_multiple: int,
  masked: bool,
  heldout: Sequence[str],
  batch_size: int,
  hypernet_config=None,
  encoder_buckets=None,
) -> SampledTokenizers:
  """The training sampler (and its held-out twin), with a static batch vocabulary divisible by `rows_multiple`."""
  from zett.tokenization import TokenizerSampler

  num_specials = len(base.special_ids)
  max_rows = num_specials + config.vocab_size
  requested = config.batch_vocab_size or max_rows
  # Vocabulary rows are split over the mesh's "data" axis, so their number must divide by it.
  rows = -(-requested // rows_multiple) * rows_multiple
  options: dict[str, Any] = dict(
    vocab_size=config.vocab_size,
    noise_std=config.noise_std,
    history_batches=config.history_batches,
    sequence_length=sequence_length,
    surface_max_length=surface_max_length,
    batch_vocab_size=rows if rows != max_rows else 0,
    pretokenizers=config.pretokenizers,
    **config.options,
  )
  try:
    sampler = TokenizerSampler(base, seed=config.seed, **options)
    eval_sampler = TokenizerSampler(base, seed=config.seed + 1, **options)
  except TypeError as e:
    raise ConfigError(f"sampler.options: {e}") from None
  for start in range(0, len(heldout), batch_size):
    eval_sampler.sample(heldout[start : start + batch_size])
  return SampledTokenizers(
    sampler, eval_sampler, base, surface_max_length, masked, hypernet_config, encoder_buckets, config.weight_negatives
  )
