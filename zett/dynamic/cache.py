"""An LRU cache of per-token embeddings keyed by the token's bytes."""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

_Key = TypeVar("_Key", bound=Hashable)


class EmbeddingCache:
  """Least-recently-used cache of embedding rows, with hit/miss counters.

  `lookup_or_compute` answers a whole batch of keys, computing all misses in one call, which is
  what makes it cheap for a hypernetwork (one forward pass per batch, not per token).
  """

  def __init__(self, capacity: int):
    if not isinstance(capacity, int) or capacity < 0:
      raise ValueError(f"cache capacity must be a non-negative integer, got {capacity!r}")
    self.capacity = capacity
    self.hits = 0
    self.misses = 0
    self._rows: collections.OrderedDict[Hashable, np.ndarray] = collections.OrderedDict()

  def __len__(self) -> int:
    return len(self._rows)

  def __contains__(self, key: Hashable) -> bool:
    return key in self._rows

  @property
  def hit_rate(self) -> float:
    total = self.hits + self.misses
    return self.hits / total if total else 0.0

  def clear(self) -> None:
    self._rows.clear()
    self.hits = self.misses = 0

  def lookup_or_compute(self, keys: Sequence[_Key], compute_fn: Callable[[list[_Key]], np.ndarray]) -> np.ndarray:
    """Rows for `keys` [K, ...]; the distinct missing keys go to `compute_fn` in one call.

    Each occurrence of a key counts once, as a hit or a miss; a key repeated within one call is a
    miss the first time (when it is not cached) and a hit afterwards.

    Args:
      keys: the tokens (e.g. their bytes).
      compute_fn: list of distinct missing keys [M] -> array [M, ...] of their rows. Not called when
        everything is cached.
    """
    keys = list(keys)
    missing: dict[_Key, int] = {}
    for key in keys:
      if key in self._rows or key in missing:
        self.hits += 1
      else:
        missing[key] = len(missing)
        self.misses += 1
    computed = np.empty((0,), np.float32)  # stays empty when every key is cached
    if missing:
      computed = np.asarray(compute_fn(list(missing)))
      if computed.shape[0] != len(missing):
        raise ValueError(f"compute_fn returned {computed.shape[0]} rows for {len(missing)} keys")
    rows = []
    for key in keys:
      if key in missing:
        rows.append(computed[missing[key]])
      else:
        row = self._rows[key]
        self._rows.move_to_end(key)
        rows.append(row)
    # Insert after answering, so that a batch larger than the cache still gets every row.
    if missing:
      for key, j in missing.items():
        self._rows[key] = computed[j]
        self._rows.move_to_end(key)
      while len(self._rows) > self.capacity:
        self._rows.popitem(last=False)
    if not keys:
      return np.zeros((0,), dtype=np.float32)
    return np.stack(rows)
