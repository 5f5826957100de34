"""Target tokenizers for training and evaluation, as `TargetVocabulary` + an encoder.

Training draws a fresh tokenizer per batch through `zett.tokenization`'s `TokenizerSampler`; evaluation uses fixed
tokenizers (the base's own, held-out ones named in the config, and sampled ones with fixed seeds).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from train.batch import TargetVocabulary

_MASK_CONTENTS = ("<mask>", "[MASK]", "<MASK>")


@dataclasses.dataclass(frozen=True)
class EncodedVocabulary:
  """A target tokenizer ready for batching: its vocabulary view and a text -> ids function."""

  name: str
  vocab: TargetVocabulary
  encode: Callable[[Sequence[str]], list[list[int]]]


def base_tokenizer_of(base_model, spec: str | None = None):
  """The base's tokenizer as a `zett.tokenization.Tokenizer` (`spec` overrides the one shipped with the model)."""
  from zett.tokenization import load_tokenizer
  from zett.tokenization.load import Tokenizer, from_backend
  if spec:
    return load_tokenizer(spec)
  tokenizer = base_model.tokenizer
  if tokenizer is None:
    raise ValueError(f"base model {base_model.name} comes without a tokenizer; set model.tokenizer in the config")
  if isinstance(tokenizer, Tokenizer):
    return tokenizer
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    return load_tokenizer(tokenizer)
  roles = {role: getattr(tokenizer, f"{role}_token", None) for role in ("bos", "eos", "pad", "unk")}
  return from_backend(backend, base_model.name, {k: v for k, v in roles.items() if v is not None})


def target_vocabulary(target, base, surface_max_length: int) -> TargetVocabulary:
  """Surface forms + byte lengths of every token of `target` (a `Tokenizer`) in `base` subtokens."""
  from zett.tokenization import surface_forms
  forms = surface_forms(target, base, max_length=surface_max_length)
  special = np.zeros(target.vocab_size, bool)
  special[sorted(target.special_ids)] = True
  token_bytes = np.array([0 if special[i] else len(b) for i, b in enumerate(target.vocab_bytes)], np.int32)
  pieces = target.id_to_piece
  mask_ids = [i for i in sorted(target.special_ids) if pieces[i] in _MASK_CONTENTS]
  return TargetVocabulary(surface_ids=forms.ids.astype(np.int32), surface_lengths=forms.lengths.astype(np.int32),
                          special_base_ids=forms.special_base_ids.astype(np.int32), token_bytes=token_bytes,
                          mask_token_id=mask_ids[0] if mask_ids else -1)


def encoded_vocabulary(name: str, target, base, surface_max_length: int) -> EncodedVocabulary:
  vocab = target_vocabulary(target, base, surface_max_length)
  return EncodedVocabulary(name, vocab, lambda texts: target.encode_batch(list(texts)))


def fixed_vocabularies(specs: Sequence[str], base, surface_max_length: int) -> list[EncodedVocabulary]:
  from zett.tokenization import load_tokenizer
  return [encoded_vocabulary(spec, load_tokenizer(spec), base, surface_max_length) for spec in specs]


def check_tokenizer_specs(specs: Sequence[str]) -> None:
  """Fails fast on a held-out tokenizer path that does not exist (before anything is compiled)."""
  import os
  for spec in specs:
    if (spec.startswith(("/", "./", "../")) or spec.endswith((".json", ".model", ".gguf", ".tiktoken"))) \
        and not os.path.exists(spec):
      raise ValueError(f"eval.heldout_tokenizers: {spec} does not exist")


def mask_token_for_objective(vocab: TargetVocabulary, masked: bool, name: str) -> None:
  if masked and vocab.mask_token_id < 0:
    raise ValueError(f"tokenizer {name} has no mask token (one of {_MASK_CONTENTS}); the masked-LM loss needs one")





class SampledTokenizers:
  """Adapter over `zett.tokenization`'s `TokenizerSampler`: one fresh tokenizer per batch, exact state get/set."""

  def __init__(self, sampler, base, surface_max_length: int, masked: bool, eval_seed_offset: int = 1_000_003):
    self._sampler = sampler
    self._base = base
    self._surface_max_length = surface_max_length
    self._masked = masked
    self._eval_seed_offset = eval_seed_offset

  @property
  def max_vocab_size(self) -> int:
    return int(self._sampler.max_vocab_size)

  def sample(self, texts: Sequence[str], step: int) -> EncodedVocabulary:
    tokenizer = self._sampler.sample(texts)
    encoded = encoded_vocabulary(f"sampled@{step}", tokenizer, self._base, self._surface_max_length)
    mask_token_for_objective(encoded.vocab, self._masked, encoded.name)
    return encoded

  def eval_vocabulary(self, index: int) -> EncodedVocabulary:
    tokenizer = self._sampler.sample_fixed(self._eval_seed_offset + index)
    return encoded_vocabulary(f"sampled-eval-{index}", tokenizer, self._base, self._surface_max_length)

  def get_state(self) -> dict:
    return self._sampler.get_state()

  def set_state(self, state: dict) -> None:
    self._sampler.set_state(state)


def make_sampler(config, base, surface_max_length: int, masked: bool) -> SampledTokenizers:
  from zett.tokenization import TokenizerSampler
  sampler = TokenizerSampler(base, vocab_size=config.vocab_size, noise_std=config.noise_std,
                             history_batches=config.history_batches, seed=config.seed, **config.options)
  return SampledTokenizers(sampler, base, surface_max_length, masked)
