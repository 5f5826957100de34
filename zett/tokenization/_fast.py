"""Compiled (numba) kernels for the tokenizer sampler's hot loops, each with a numpy twin.

The sampler must keep pace with a training step on one host core. The numpy path in
`_substrings` is vectorised but pays for it in memory traffic ([P, L] score matrices, a Python
loop over word lengths, sorted-array inserts). These kernels do the same work in one pass each:

- `segment`: Unigram Viterbi over every word (same result as `_substrings.segment`).
- `merge_window`: adds a batch's sorted substring counts to the window and retires the oldest
  batch in one merge (same arrays as `SubstringWindow`'s searchsorted + insert path).
- `BpeSpeller`: spells new pieces in a byte-level BPE base's subtokens (same ids as the `tokenizers`
  Rust model, which costs ~5 us a piece through its Python API).

numba is optional: without it `AVAILABLE` is False and the sampler uses the numpy path. Kernels
are compiled with `cache=True`, so a process pays the compile once (or loads it from __pycache__).
"""

from __future__ import annotations

import itertools
import json
from typing import Sequence

import numpy as np

from zett.tokenization.byte_level import ModelKind, bytes_to_unicode, from_byte_level, to_byte_level

try:
  import numba
  AVAILABLE = True
except ImportError:  # pragma: no cover - exercised on machines without numba
  numba = None
  AVAILABLE = False


def _jit(function):
  return numba.njit(cache=True, nogil=True)(function) if AVAILABLE else function


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
def _viterbi(codes, word_starts, word_lengths, substring_starts, substring_lengths, substring_piece, width,
             piece_ids, piece_scores, byte_ids, byte_score):
  size = codes.size
  piece_at = np.full((size, width), -1, dtype=np.int64)  # piece index of the substring [start, start + l)
  for s in range(substring_starts.size):
    piece_at[substring_starts[s], substring_lengths[s]] = substring_piece[s]
  num_words = word_starts.size
  longest = 0
  for w in range(num_words):
    longest = max(longest, word_lengths[w])
  best = np.empty(longest + 1)
  back = np.empty(longest + 1, dtype=np.int64)
  token_ids = np.empty(size, dtype=np.int64)
  offsets = np.zeros(num_words + 1, dtype=np.int64)
  reversed_ids = np.empty(longest, dtype=np.int64)
  count = 0
  for w in range(num_words):
    start, length = word_starts[w], word_lengths[w]
    best[0] = 0.0
    for end in range(1, length + 1):
      # Longest last piece first, strict '>' keeps the first best: `tokenizers`' tie rule.
      top, top_span = -np.inf, 1
      for span in range(min(end, width - 1), 0, -1):
        if span == 1:
          score = byte_score
        else:
          piece = piece_at[start + end - span, span]
          if piece < 0:
            continue
          score = piece_scores[piece]
        candidate = best[end - span] + score
        if candidate > top:
          top, top_span = candidate, span
      best[end], back[end] = top, top_span
    # Walk back, then write the word's tokens in order.
    n, position = 0, length
    while position > 0:
      span = back[position]
      position -= span
      if span == 1:
        reversed_ids[n] = byte_ids[codes[start + position]]
      else:
        reversed_ids[n] = piece_ids[piece_at[start + position, span]]
      n += 1
    for k in range(n):
      token_ids[count + k] = reversed_ids[n - 1 - k]
    count += n
    offsets[w + 1] = count
  return token_ids[:count].copy(), offsets


def segment(words, piece_keys: np.ndarray, piece_ids: np.ndarray, piece_scores: np.ndarray, byte_ids: np.ndarray,
            byte_score: float) -> tuple[np.ndarray, np.ndarray]:
  """Compiled `_substrings.segment`: same arguments, same (token ids, CSR offsets)."""
  if piece_keys.size and words.unique_keys.size:
    substring_piece = _piece_index(words.unique_keys, piece_keys)[words.substring_unique]
  else:
    substring_piece = np.full(words.substring_starts.size, -1, dtype=np.int64)
  return _viterbi(words.codes, words.word_starts, words.word_lengths, words.substring_starts.astype(np.int64),
                  words.substring_lengths.astype(np.int64), substring_piece, words.hashes.shape[1],
                  piece_ids.astype(np.int64), piece_scores.astype(np.float64), byte_ids.astype(np.int64),
                  float(byte_score))


# -- window ------------------------------------------------------------------------------------------


@_jit
def merge_window(keys, counts, locations, slots, batch_keys, batch_counts, batch_locations, expired_keys,
                 expired_counts, drop_empty):
  """One merge of the window's sorted arrays with a new batch (and minus the expired batch).

  Returns new (keys, counts, locations, slots): a key already in the window gets the batch's count
  added and the batch's location; new keys come with slot -1 (not spelled yet). With `drop_empty`,
  keys whose count fell to zero leave.
  """
  counts = counts.copy()
  j = 0
  for i in range(expired_keys.size):  # expired keys are all in the window, both sorted
    while keys[j] != expired_keys[i]:
      j += 1
    counts[j] -= expired_counts[i]
  total = keys.size + batch_keys.size
  out_keys = np.empty(total, dtype=keys.dtype)
  out_counts = np.empty(total, dtype=counts.dtype)
  out_locations = np.empty(total, dtype=locations.dtype)
  out_slots = np.empty(total, dtype=slots.dtype)
  i = j = n = 0
  while i < keys.size or j < batch_keys.size:
    if j >= batch_keys.size or (i < keys.size and keys[i] < batch_keys[j]):
      if not drop_empty or counts[i] > 0:
        out_keys[n], out_counts[n], out_locations[n], out_slots[n] = keys[i], counts[i], locations[i], slots[i]
        n += 1
      i += 1
    elif i >= keys.size or batch_keys[j] < keys[i]:
      out_keys[n], out_counts[n], out_locations[n], out_slots[n] = (batch_keys[j], batch_counts[j],
                                                                    batch_locations[j], -1)
      n += 1
      j += 1
    else:
      out_keys[n], out_counts[n], out_locations[n], out_slots[n] = (keys[i], counts[i] + batch_counts[j],
                                                                    batch_locations[j], slots[i])
      n += 1
      i += 1
      j += 1
  return out_keys[:n].copy(), out_counts[:n].copy(), out_locations[:n].copy(), out_slots[:n].copy()


# -- BPE spelling ------------------------------------------------------------------------------------


@_jit
def _pair_rank(pair_keys, pair_ranks, left, right):
  key = (np.uint64(left) << np.uint64(32)) | np.uint64(right)
  index = np.searchsorted(pair_keys, key)
  if index < pair_keys.size and pair_keys[index] == key:
    return pair_ranks[index]
  return -1


@_jit
def _bpe(codes, starts, lengths, byte_ids, pair_keys, pair_ranks, pair_new):
  """BPE of each byte string: repeatedly merge the adjacent pair of lowest rank, leftmost first."""
  out = np.empty(codes.size, dtype=np.int64)
  out_lengths = np.empty(starts.size, dtype=np.int64)
  longest = 1
  for p in range(starts.size):
    longest = max(longest, lengths[p])
  symbols = np.empty(longest, dtype=np.int64)
  ranks = np.empty(longest, dtype=np.int64)  # rank of (symbols[k], symbols[k + 1]); -1: no merge
  written = 0
  for p in range(starts.size):
    m = lengths[p]
    for k in range(m):
      symbols[k] = byte_ids[codes[starts[p] + k]]
    for k in range(m - 1):
      ranks[k] = _pair_rank(pair_keys, pair_ranks, symbols[k], symbols[k + 1])
    while m > 1:
      at = -1
      for k in range(m - 1):
        if ranks[k] >= 0 and (at < 0 or ranks[k] < ranks[at]):
          at = k
      if at < 0:
        break
      symbols[at] = pair_new[np.searchsorted(pair_keys, (np.uint64(symbols[at]) << np.uint64(32))
                                             | np.uint64(symbols[at + 1]))]
      for k in range(at + 1, m - 1):
        symbols[k], ranks[k] = symbols[k + 1], ranks[k + 1]
      m -= 1
      if at > 0:
        ranks[at - 1] = _pair_rank(pair_keys, pair_ranks, symbols[at - 1], symbols[at])
      if at < m - 1:
        ranks[at] = _pair_rank(pair_keys, pair_ranks, symbols[at], symbols[at + 1])
    for k in range(m):
      out[written + k] = symbols[k]
    written += m
    out_lengths[p] = m
  return out[:written].copy(), out_lengths


class BpeSpeller:
  """Spells byte-level strings with a byte-level BPE base, like `SurfaceEncoder.encode_byte_level_packed`.

  Build with `BpeSpeller.create(encoder)`, which returns None when the base is not a plain
  byte-level BPE (dropout, byte fallback, prefixes, a byte without a token): those go through the
  `tokenizers` model as before.
  """

  def __init__(self, encoder, exact: dict[str, int], whole: dict[str, int], byte_ids: np.ndarray,
               pair_keys: np.ndarray, pair_ranks: np.ndarray, pair_new: np.ndarray):
    self._encoder, self._exact, self._whole = encoder, exact, whole
    self._byte_ids, self._pair_keys, self._pair_ranks, self._pair_new = byte_ids, pair_keys, pair_ranks, pair_new

  @classmethod
  def create(cls, encoder) -> BpeSpeller | None:
    base = encoder.base
    if not AVAILABLE or base.kind != ModelKind.BYTE_LEVEL_BPE:
      return None
    model = json.loads(base.backend.to_str()).get("model", {})
    if (model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback")
        or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")):
      return None
    vocab: dict[str, int] = model["vocab"]
    # A byte without a token (-1) is dropped by the model; the encoder spells such pieces around it.
    byte_ids = np.array([vocab.get(bytes_to_unicode()[b], -1) for b in range(256)], dtype=np.int64)
    # Like the Rust builder: a later duplicate merge overwrites an earlier one.
    merge_of: dict[int, tuple[int, int]] = {}
    for rank, merge in enumerate(model["merges"]):
      left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
      if left not in vocab or right not in vocab or left + right not in vocab:
        return None  # the Rust model refuses such a file; do not guess
      merge_of[(vocab[left] << 32) | vocab[right]] = (rank, vocab[left + right])
    pair_keys = np.fromiter(merge_of.keys(), dtype=np.uint64, count=len(merge_of))
    values = np.array(list(merge_of.values()), dtype=np.int64).reshape(-1, 2)
    order = np.argsort(pair_keys)
    # Pieces that are base tokens spell as themselves, even where BPE would not reach them.
    exact = {to_byte_level(data): token_id for data, token_id in encoder._exact.items()}
    whole = vocab if model.get("ignore_merges") else {}
    return cls(encoder, exact, whole, byte_ids, pair_keys[order], values[order, 0].copy(),
               values[order, 1].copy())

  def spell(self, spellings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(flat base ids, ids per spelling) for non-empty byte-level spellings."""
    exact = np.fromiter(map(self._exact.get, spellings, [-1] * len(spellings)), dtype=np.int64,
                        count=len(spellings))
    if self._whole:
      whole = np.fromiter(map(self._whole.get, spellings, [-1] * len(spellings)), dtype=np.int64,
                          count=len(spellings))
      exact = np.where(exact >= 0, exact, whole)
    lengths = np.ones(len(spellings), dtype=np.int64)
    rest = np.flatnonzero(exact < 0)
    if not rest.size:
      return exact, lengths
    strings = [spellings[i] for i in rest.tolist()]
    codes = np.frombuffer(from_byte_level("".join(strings)), dtype=np.uint8)
    rest_lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    rest_starts = np.cumsum(rest_lengths) - rest_lengths
    # A byte the base has no token for (rare: controls, non-UTF-8 bytes) takes the encoder's rule.
    clean = np.minimum.reduceat(self._byte_ids[codes], rest_starts) >= 0
    parts = []
    if clean.all():
      parts.append((rest, *_bpe(codes, rest_starts, rest_lengths, self._byte_ids, self._pair_keys,
                                self._pair_ranks, self._pair_new)))
    else:
      selected = np.repeat(clean, rest_lengths)
      clean_lengths = rest_lengths[clean]
      parts.append((rest[clean], *_bpe(codes[selected], np.cumsum(clean_lengths) - clean_lengths, clean_lengths,
                                       self._byte_ids, self._pair_keys, self._pair_ranks, self._pair_new)))
      rows = self._encoder.encode_byte_level([strings[i] for i in np.flatnonzero(~clean).tolist()])
      row_lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
      parts.append((rest[~clean], np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                                              count=int(row_lengths.sum())), row_lengths))
    for where, _, counts in parts:
      lengths[where] = counts
    flat = np.repeat(exact, lengths)
    starts = np.cumsum(lengths) - lengths
    for where, ids, counts in parts:
      flat[np.repeat(starts[where] - (np.cumsum(counts) - counts), counts) + np.arange(ids.size)] = ids
    return flat, lengths
