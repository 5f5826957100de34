"""The batch merger's input and output: `BaseBatch` (a batch split by the base tokenizer), `MergeResult` (the merged
batch), `MergeInputError`, and the checks of a batch and of the stopping rules (`zett.dynamic.merge` merges).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from zett.errors import ZettError


class MergeInputError(ZettError, ValueError):
  """A batch or stopping rule the merger cannot work with; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class BaseBatch:
  """A batch split by the base tokenizer.

  Attributes:
    token_ids: per example, int base-vocabulary ids [T_i].
    starts_pretoken: per example, bool [T_i]; True where a token begins a new pre-token
      (the first token of an example always does, whatever the flag says).
    id_to_bytes: the base vocabulary, id -> the token's raw bytes (byte-level "Ġ" already
      mapped back to a space, SentencePiece "▁" to a space).
    special_ids: base ids that are never merged (BOS, EOS, ...).
  """

  token_ids: Sequence[np.ndarray]
  starts_pretoken: Sequence[np.ndarray]
  id_to_bytes: Sequence[bytes]
  special_ids: frozenset[int] = frozenset()

  @classmethod
  def from_pieces(cls, pieces: Sequence[Sequence[bytes]], starts_pretoken: Sequence[Sequence[bool]]) -> BaseBatch:
    """Builds a batch from byte pieces; the vocabulary is the distinct pieces in order of appearance."""
    vocab: dict[bytes, int] = {}
    token_ids = []
    for example in pieces:
      token_ids.append(np.array([vocab.setdefault(bytes(p), len(vocab)) for p in example], dtype=np.int64))
    starts = [np.asarray(s, dtype=bool) for s in starts_pretoken]
    return cls(token_ids, starts, list(vocab), frozenset())

  def pieces(self) -> list[list[bytes]]:
    return [[self.id_to_bytes[int(i)] for i in ids] for ids in self.token_ids]


@dataclasses.dataclass(frozen=True)
class MergeResult:
  """The merged batch.

  Attributes:
    pieces: per example, the merged tokens' bytes.
    ids: per example, int32 [N_i]: a base id where the token is a single base token or its bytes
      are in the base vocabulary, else `base_vocab_size + k` for `new_tokens[k]`.
    spans: per example, int32 [N_i, 2]: [start, end) positions of each merged token in the
      example's base tokens (for token-level tasks).
    new_tokens: bytes of the batch's tokens that the base vocabulary lacks, in order of the merge
      that first made them; only tokens that occur in `pieces` are listed.
    new_token_base_ids: for each new token, the base ids it was merged from at its first
      occurrence (example order): its surface form for the hypernetwork.
    merges: the merges done, in order, as (left bytes, right bytes).
    stop_reason: "max_merges", "target_reduction", "min_frequency" or "no_pairs".
    base_vocab_size: size of the base vocabulary (first new id).
  """

  pieces: list[list[bytes]]
  ids: list[np.ndarray]
  spans: list[np.ndarray]
  new_tokens: list[bytes]
  new_token_base_ids: list[tuple[int, ...]]
  merges: list[tuple[bytes, bytes]]
  stop_reason: str
  base_vocab_size: int

  @property
  def num_base_tokens(self) -> int:
    return int(sum(int(s[-1, 1]) if len(s) else 0 for s in self.spans))

  @property
  def num_merged_tokens(self) -> int:
    return sum(len(p) for p in self.pieces)

  @property
  def reduction(self) -> float:
    """Fraction of tokens saved: 1 - merged / base."""
    return 1.0 - self.num_merged_tokens / self.num_base_tokens

  @property
  def new_token_ids(self) -> dict[bytes, int]:
    return {t: self.base_vocab_size + k for k, t in enumerate(self.new_tokens)}


def check_stopping_rules(max_merges: int | None, target_reduction: float | None, min_frequency: int) -> None:
  if max_merges is not None and (not isinstance(max_merges, (int, np.integer)) or max_merges < 0):
    raise MergeInputError(f"max_merges must be a non-negative integer, got {max_merges!r}")
  if target_reduction is not None and not 0.0 <= float(target_reduction) < 1.0:
    raise MergeInputError(f"target_reduction must be in [0, 1), got {target_reduction!r}")
  if not isinstance(min_frequency, (int, np.integer)) or min_frequency < 1:
    raise MergeInputError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")


def check_batch(batch: BaseBatch) -> None:
  if len(batch.token_ids) == 0:
    raise MergeInputError("empty batch: no examples to merge")
  if len(batch.token_ids) != len(batch.starts_pretoken):
    raise MergeInputError(
      f"token_ids has {len(batch.token_ids)} examples but starts_pretoken has {len(batch.starts_pretoken)}"
    )
  vocab_size = len(batch.id_to_bytes)
  for i, (ids, starts) in enumerate(zip(batch.token_ids, batch.starts_pretoken)):
    if len(ids) == 0:
      raise MergeInputError(f"example {i} is empty (an empty string has no tokens to merge)")
    if len(ids) != len(starts):
      raise MergeInputError(f"example {i}: {len(ids)} tokens but {len(starts)} pre-token flags")
    ids = np.asarray(ids)
    if ids.min() < 0 or ids.max() >= vocab_size:
      raise MergeInputError(f"example {i}: token id out of range [0, {vocab_size})")
    for t in set(ids.tolist()) - batch.special_ids:
      if len(batch.id_to_bytes[t]) == 0:
        raise MergeInputError(
          f"example {i}: base token {t} has empty bytes (an empty string piece); drop it or mark it special"
        )
