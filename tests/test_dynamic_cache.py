"""The LRU embedding cache: capacity, counters, batching of misses, and transparency."""

import numpy as np
import pytest

from zett.dynamic import EmbeddingCache


class _CountingEmbedder:
  """A deterministic 'hypernetwork': row = bytes values padded to 4; records every call."""

  def __init__(self):
    self.calls = []

  def __call__(self, keys):
    self.calls.append(list(keys))
    return np.array([[float(len(k))] + [float(b) for b in k[:3].ljust(3, b"\0")] for k in keys], dtype=np.float32)


def test_hits_misses_and_one_call_per_batch():
  cache, embed = EmbeddingCache(capacity=10), _CountingEmbedder()
  rows = cache.lookup_or_compute([b"ab", b"cd", b"ab"], embed)
  assert embed.calls == [[b"ab", b"cd"]]  # the duplicate is computed once
  assert (cache.hits, cache.misses) == (1, 2)
  np.testing.assert_array_equal(rows[0], rows[2])
  cache.lookup_or_compute([b"cd", b"ef", b"ab"], embed)
  assert embed.calls[-1] == [b"ef"] and (cache.hits, cache.misses) == (3, 3)
  assert cache.hit_rate == pytest.approx(0.5)
  cache.lookup_or_compute([b"ab"], embed)
  assert len(embed.calls) == 2  # nothing missing: compute_fn not called


def test_capacity_and_lru_order():
  cache, embed = EmbeddingCache(capacity=3), _CountingEmbedder()
  cache.lookup_or_compute([b"a", b"b", b"c"], embed)
  cache.lookup_or_compute([b"a"], embed)  # a is now the most recent; b the least
  cache.lookup_or_compute([b"d"], embed)
  assert len(cache) == 3 and b"b" not in cache and all(k in cache for k in (b"a", b"c", b"d"))
  rows = cache.lookup_or_compute([b"e", b"f", b"g", b"h", b"i"], embed)  # larger than the cache
  assert rows.shape == (5, 4) and len(cache) == 3 and all(k in cache for k in (b"g", b"h", b"i"))
  zero = EmbeddingCache(capacity=0)
  zero.lookup_or_compute([b"a"], embed)
  zero.lookup_or_compute([b"a"], embed)
  assert len(zero) == 0 and zero.hits == 0 and zero.misses == 2


def test_results_identical_with_and_without_cache():
  rng = np.random.default_rng(0)
  vocab = [bytes(rng.integers(97, 100, size=rng.integers(1, 4)).tolist()) for _ in range(60)]
  cache, embed = EmbeddingCache(capacity=8), _CountingEmbedder()
  for _ in range(20):
    keys = [vocab[i] for i in rng.integers(0, len(vocab), size=12)]
    np.testing.assert_array_equal(cache.lookup_or_compute(keys, embed), _CountingEmbedder()(keys))
  assert cache.hits + cache.misses == 240 and cache.hits > 0 and len(cache) <= 8


def test_bad_arguments():
  with pytest.raises(ValueError, match="capacity"):
    EmbeddingCache(capacity=-1)
  with pytest.raises(ValueError, match="returned 1 rows for 2 keys"):
    EmbeddingCache(4).lookup_or_compute([b"a", b"b"], lambda keys: np.zeros((1, 3)))
