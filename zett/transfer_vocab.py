"""The target vocabulary as transfer sees it: every target token spelled in the base model's subtokens.

Accepts target tokenizers in every form a user has one (a spec for `load_tokenizer`, our `Tokenizer`, a
`transformers` fast tokenizer, a bare `tokenizers.Tokenizer`) and produces the arrays the hypernetwork
and the baselines read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from zett.errors import ZettError
from zett.tokenization.surface import SurfaceForms
from zett.tokenization.tokenizer import Tokenizer


class MissingTokenizerError(ZettError, ValueError):
  """A tokenizer that is absent or cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class TargetVocabulary:
  """Spellings of the target vocabulary in base subtokens, and the special-token mapping."""

  tokenizer: Tokenizer
  """The target (an export saves its `to_transformers()`)."""
  name: str
  surface_ids: np.ndarray
  """int32 [V, L] base ids spelling each target token."""
  surface_lengths: np.ndarray
  """int32 [V] number of real subtokens."""
  special_base_ids: np.ndarray
  """int32 [V]: >= 0 for a special token with a base counterpart (that base row is copied), else -1."""

  @classmethod
  def spelled(cls, tokenizer: Tokenizer, forms: SurfaceForms) -> TargetVocabulary:
    """`tokenizer`'s vocabulary as `forms` spell it in base subtokens."""
    return cls(tokenizer, short_name(tokenizer.name), forms.ids, forms.lengths, forms.special_base_ids)

  @property
  def size(self) -> int:
    return int(self.surface_ids.shape[0])


def as_tokenizer(spec, what: str = "tokenizer") -> Tokenizer:
  """A `Tokenizer` from a spec or any loaded tokenizer object (`load_tokenizer`); MissingTokenizerError if none."""
  from zett.tokenization import TokenizerError, load_tokenizer

  if spec is None:
    raise MissingTokenizerError(f"no {what} given (the model has none; pass one explicitly)")
  try:
    return load_tokenizer(spec)
  except TokenizerError as e:
    raise MissingTokenizerError(f"{what}: {e}") from None


def short_name(name: str) -> str:
  """A local path's last component (for model names and tables); hub names and others unchanged."""
  path = Path(name)
  return path.name if path.exists() else name


def build_target_vocabulary(target, base_tokenizer: Tokenizer, surface_length: int) -> TargetVocabulary:
  """Spells every token of `target` (any tokenizer form) in the base model's tokenizer's subtokens."""
  from zett.tokenization import surface_forms

  target = as_tokenizer(target, "target tokenizer")
  return TargetVocabulary.spelled(target, surface_forms(target, base_tokenizer, max_length=surface_length))


def published_target_vocabulary(target, config):
  """The `TargetVocabulary` transfer uses with a `PublishedHypernetConfig` (spelled by its own tokenizer)."""
  from zett.tokenization.published_surface import spell_like_zett_authors

  target = as_tokenizer(target, "target tokenizer")
  forms = spell_like_zett_authors(target, config.surface_tokenizer, config.surface_length, config.base_vocab_size)
  return TargetVocabulary.spelled(target, forms)
