"""Compiled (numba) kernels for the tokenizer sampler's hot loops, each with a numpy twin.

The sampler must keep pace with a training step on one host core. The numpy path in
`_substrings` is vectorised but pays for it in memory traffic ([P, L] hash and score matrices, a
Python loop over word lengths, sorted-array inserts). These kernels do the same work in one pass:

- `hash_count`: hashes and counts every in-word substring (= `hash_words` + `count_substrings`).
- `segment`: Unigram Viterbi over every word (same result as `_substrings.segment`).
- `merge_window`: adds a batch's sorted substring counts to the window and retires the oldest
  batch in one merge (same arrays as `SubstringWindow`'s searchsorted + insert path).

`_fast_pretokenize` (the regex pre-tokenizer) and `_fast_bpe` (spelling new pieces in the base's
subtokens) hold the other two kernels.

numba is optional: without it `AVAILABLE` is False and the sampler uses the numpy path. Kernels
are compiled with `cache=True`, so a process pays the compile once (or loads it from __pycache__).
"""

from __future__ import annotations

import numpy as np

from zett.tokenization._substrings import HASH_MULTIPLIER

try:
  import numba

  AVAILABLE = True
except ImportError:  # pragma: no cover - exercised on machines without numba
  numba = None
  AVAILABLE = False


def _jit(function):
  if numba is None:  # not AVAILABLE
    return function
  try:  # compiled once per checkout, then loaded from __pycache__ (or numba's user-wide cache)
    return numba.njit(cache=True, nogil=True)(function)
  except RuntimeError:  # no writable cache location: compile once per process instead
    return numba.njit(nogil=True)(function)


@_jit
def _table_bits(entries, oversize):
  """log2 of an open-addressing table's size: the smallest power of two (>= 16) holding oversize x entries."""
  bits = 4
  while (1 << bits) < oversize * max(entries, 1):
    bits += 1
  return bits


# -- Viterbi -----------------------------------------------------------------------------------------


@_jit
def _piece_index(unique_keys, piece_keys):
  """For each sorted batch key, the index of the equal sorted piece key, else -1 (one merge walk)."""
  out = np.full(unique_keys.size, -1, dtype=np.int64)
  j = 0
  for i in range(unique_keys.size):
    key = unique_keys[i]
    while j < piece_keys.size and piece_keys[j] < key:
      j += 1
    if j < piece_keys.size and piece_keys[j] == key:
      out[i] = j
  return out


@_jit
def _viterbi(
  codes,
  word_starts,
  word_lengths,
  substring_starts,
  substring_lengths,
  substring_piece,
  piece_ids,
  piece_scores,
  byte_ids,
  byte_score,
):
  # Forward ("push") DP over the substrings, which come sorted by start: a prefix end hears from
  # the earliest start (longest last piece) first and strict '>' keeps the first best, which is
  # `tokenizers`' tie rule and `_substrings.segment`'s.
  num_words = word_starts.size
  longest = 0
  for w in range(num_words):
    longest = max(longest, word_lengths[w])
  best = np.empty(longest + 1)
  back = np.empty(longest + 1, dtype=np.int64)
  back_id = np.empty(longest + 1, dtype=np.int64)
  token_ids = np.empty(codes.size, dtype=np.int64)
  offsets = np.zeros(num_words + 1, dtype=np.int64)
  reversed_ids = np.empty(max(longest, 1), dtype=np.int64)
  count = s = 0
  for w in range(num_words):
    start, length = word_starts[w], word_lengths[w]
    best[0] = 0.0
    for e in range(1, length + 1):
      best[e] = -np.inf
    for position in range(length):
      here = best[position]
      while s < substring_starts.size and substring_starts[s] == start + position:
        piece = substring_piece[s]
        if piece >= 0:
          end = position + substring_lengths[s]
          candidate = here + piece_scores[piece]
          if candidate > best[end]:
            best[end], back[end], back_id[end] = candidate, substring_lengths[s], piece_ids[piece]
        s += 1
      candidate = here + byte_score
      if candidate > best[position + 1]:
        best[position + 1], back[position + 1] = candidate, 1
        back_id[position + 1] = byte_ids[codes[start + position]]
    n, position = 0, length
    while position > 0:
      reversed_ids[n] = back_id[position]
      position -= back[position]
      n += 1
    for k in range(n):
      token_ids[count + k] = reversed_ids[n - 1 - k]
    count += n
    offsets[w + 1] = count
  return token_ids[:count].copy(), offsets


def segment(
  words,
  piece_keys: np.ndarray,
  piece_ids: np.ndarray,
  piece_scores: np.ndarray,
  byte_ids: np.ndarray,
  byte_score: float,
) -> tuple[np.ndarray, np.ndarray]:
  """Compiled `_substrings.segment`: same arguments, same (token ids, CSR offsets)."""
  if piece_keys.size and words.unique_keys.size:
    substring_piece = _piece_index(words.unique_keys, piece_keys)[words.substring_unique]
  else:
    substring_piece = np.full(words.substring_starts.size, -1, dtype=np.int64)
  return _viterbi(
    words.codes,
    words.word_starts,
    words.word_lengths,
    words.substring_starts.astype(np.int64),
    words.substring_lengths.astype(np.int64),
    substring_piece,
    piece_ids.astype(np.int64),
    piece_scores.astype(np.float64),
    byte_ids.astype(np.int64),
    float(byte_score),
  )


# -- substring counting -----------------------------------------------------------------------------


@_jit
def _hash_count(codes, word_starts, word_lengths, word_counts, max_length, multiplier):
  """Every in-word whole-character substring of 2..max_length bytes, deduplicated by hash table.

  Hashes are `_substrings.hash_words`' polynomial ones; substrings come in (start, length) order,
  so a key's first occurrence is the one numpy's `np.nonzero` order finds first.
  """
  size = codes.size
  # Exact number of substrings first: fresh arrays cost page faults, so size them tightly.
  limit = 0
  for w in range(word_starts.size):
    start, end = word_starts[w], word_starts[w] + word_lengths[w]
    for p in range(start, end):
      if (codes[p] & 0xC0) != 0x80:
        for q in range(p + 2, min(p + max_length, end) + 1):
          if q == end or (codes[q] & 0xC0) != 0x80:
            limit += 1
  bits = _table_bits(limit, 2)
  mask = (1 << bits) - 1
  table = np.full(1 << bits, -1, dtype=np.int32)
  keys = np.empty(limit, dtype=np.uint64)
  counts = np.zeros(limit, dtype=np.int64)
  firsts = np.empty(limit, dtype=np.int64)
  lengths = np.empty(limit, dtype=np.int64)
  sub_starts = np.empty(limit, dtype=np.int64)
  sub_lengths = np.empty(limit, dtype=np.int64)
  sub_unique = np.empty(limit, dtype=np.int64)
  golden = np.uint64(0x9E3779B97F4A7C15)
  shift = np.uint64(64 - bits)
  unique = found = 0
  for w in range(word_starts.size):
    start, end, weight = word_starts[w], word_starts[w] + word_lengths[w], word_counts[w]
    for p in range(start, end):
      if (codes[p] & 0xC0) == 0x80:
        continue  # pieces start on a character
      h = np.uint64(codes[p]) + np.uint64(1)
      for length in range(2, max_length + 1):
        q = p + length
        if q > end:
          break
        h = h * multiplier + np.uint64(codes[q - 1]) + np.uint64(1)
        if q < size and q < end and (codes[q] & 0xC0) == 0x80:
          continue  # ... and end on one
        slot = np.int64((h * golden) >> shift)
        while True:
          index = table[slot]
          if index < 0:
            index = unique
            table[slot] = index
            keys[unique], firsts[unique], lengths[unique] = h, p, length
            unique += 1
            break
          if keys[index] == h:
            break
          slot = (slot + 1) & mask
        counts[index] += weight
        sub_starts[found], sub_lengths[found], sub_unique[found] = p, length, index
        found += 1
  return (
    keys[:unique],
    counts[:unique],
    firsts[:unique],
    lengths[:unique],
    sub_starts[:found],
    sub_lengths[:found],
    sub_unique[:found],
  )


def hash_count(
  codes: np.ndarray, word_starts: np.ndarray, word_lengths: np.ndarray, word_counts: np.ndarray, max_length: int
):
  """Compiled `hash_words` + `count_substrings`: (sorted keys, counts, first offsets, lengths,
  substring starts, substring lengths, substring -> sorted key index)."""
  keys, counts, firsts, lengths, starts, sub_lengths, sub_unique = _hash_count(
    codes, word_starts, word_lengths, word_counts, max_length, HASH_MULTIPLIER
  )
  order = np.argsort(keys)
  rank = np.empty_like(order)
  rank[order] = np.arange(order.size)
  return keys[order], counts[order], firsts[order], lengths[order], starts, sub_lengths, rank[sub_unique]


# -- window ------------------------------------------------------------------------------------------


@_jit
def merge_window(
  keys,
  counts,
  locations,
  slots,
  batch_keys,
  batch_counts,
  batch_locations,
  expired_keys,
  expired_counts,
  drop_empty,
  out_keys,
  out_counts,
  out_locations,
  out_slots,
):
  """One merge of the window's sorted arrays with a new batch (and minus the expired batch).

  Writes the new (keys, counts, locations, slots) to the `out_*` buffers (room for both inputs)
  and returns their length: a key already in the window gets the batch's count added and the
  batch's location; new keys come with slot -1 (not spelled yet). With `drop_empty`, keys whose
  count fell to zero leave. `counts` is updated in place.
  """
  j = 0
  for i in range(expired_keys.size):  # expired keys are all in the window, both sorted
    while keys[j] != expired_keys[i]:
      j += 1
    counts[j] -= expired_counts[i]
  i = j = n = 0
  while i < keys.size or j < batch_keys.size:
    if j >= batch_keys.size or (i < keys.size and keys[i] < batch_keys[j]):
      if not drop_empty or counts[i] > 0:
        out_keys[n], out_counts[n], out_locations[n], out_slots[n] = keys[i], counts[i], locations[i], slots[i]
        n += 1
      i += 1
    elif i >= keys.size or batch_keys[j] < keys[i]:
      out_keys[n], out_counts[n], out_locations[n], out_slots[n] = (
        batch_keys[j],
        batch_counts[j],
        batch_locations[j],
        -1,
      )
      n += 1
      j += 1
    else:
      out_keys[n], out_counts[n], out_locations[n], out_slots[n] = (
        keys[i],
        counts[i] + batch_counts[j],
        batch_locations[j],
        slots[i],
      )
      n += 1
      i += 1
      j += 1
  return n
