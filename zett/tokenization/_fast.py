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

import functools
import itertools
import json
from typing import Sequence

import numpy as np
import regex

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
def _viterbi(codes, word_starts, word_lengths, substring_starts, substring_lengths, substring_piece, piece_ids,
             piece_scores, byte_ids, byte_score):
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


def segment(words, piece_keys: np.ndarray, piece_ids: np.ndarray, piece_scores: np.ndarray, byte_ids: np.ndarray,
            byte_score: float) -> tuple[np.ndarray, np.ndarray]:
  """Compiled `_substrings.segment`: same arguments, same (token ids, CSR offsets)."""
  if piece_keys.size and words.unique_keys.size:
    substring_piece = _piece_index(words.unique_keys, piece_keys)[words.substring_unique]
  else:
    substring_piece = np.full(words.substring_starts.size, -1, dtype=np.int64)
  return _viterbi(words.codes, words.word_starts, words.word_lengths, words.substring_starts.astype(np.int64),
                  words.substring_lengths.astype(np.int64), substring_piece, piece_ids.astype(np.int64),
                  piece_scores.astype(np.float64), byte_ids.astype(np.int64), float(byte_score))


# -- pre-tokenization --------------------------------------------------------------------------------

_OTHER, _LETTER, _NUMBER, _SPACE = 0, 1, 2, 3


@functools.cache
def _classes() -> np.ndarray:
  """uint8 [0x110000]: each code point's class for the pre-token pattern, as `regex` itself sees it."""
  everything = "".join(map(chr, range(0x110000)))
  table = np.zeros(0x110000, dtype=np.uint8)  # _OTHER: [^\s\p{L}\p{N}]
  for value, pattern in ((_LETTER, r"\p{L}+"), (_NUMBER, r"\p{N}+"), (_SPACE, r"\s+")):
    for match in regex.finditer(pattern, everything):
      table[match.start():match.end()] = value
  return table


@_jit
def _run(points, classes, i, end, value):
  while i < end and classes[points[i]] == value:
    i += 1
  return i


@_jit
def _next_pretoken(points, classes, i, end):
  """End of the pre-token at i: `sampler.PRETOKEN_PATTERN`'s alternatives, tried in its order."""
  c = points[i]
  if c == 39 and i + 1 < end:  # 's 't 're 've 'm 'll 'd
    d = points[i + 1]
    if d == 115 or d == 116 or d == 109 or d == 100:
      return i + 2
    if i + 2 < end:
      e = points[i + 2]
      if (d == 114 and e == 101) or (d == 118 and e == 101) or (d == 108 and e == 108):
        return i + 3
  kind = classes[c]
  if c == 32 and i + 1 < end and classes[points[i + 1]] != _SPACE:  # ' ?' before a letter/number/other run
    return _run(points, classes, i + 2, end, classes[points[i + 1]])
  if kind != _SPACE:
    return _run(points, classes, i + 1, end, kind)
  j = _run(points, classes, i + 1, end, _SPACE)
  if j == end:
    return j  # \s+(?!\S) to the end
  if j - i >= 2:
    return j - 1  # \s+(?!\S) leaves the last space to the next pre-token
  return j  # \s+


@_jit
def _pretokenize(points, text_ends, classes):
  """Pre-tokens of every text, deduplicated: (word of each pre-token, first occurrence, length, count)."""
  size = points.size
  bits = 4
  while (1 << bits) < 2 * max(size, 1):
    bits += 1
  mask = (1 << bits) - 1
  table = np.full(1 << bits, -1, dtype=np.int32)
  word_of = np.empty(size, dtype=np.int64)
  starts = np.empty(size, dtype=np.int64)
  lengths = np.empty(size, dtype=np.int64)
  counts = np.zeros(size, dtype=np.int64)
  hashes = np.empty(size, dtype=np.uint64)
  golden = np.uint64(0x9E3779B97F4A7C15)
  shift = np.uint64(64 - bits)
  token_ends = np.empty(text_ends.size, dtype=np.int64)
  tokens = words = 0
  begin = 0
  for t in range(text_ends.size):
    end = text_ends[t]
    i = begin
    while i < end:
      j = _next_pretoken(points, classes, i, end)
      h = np.uint64(j - i)
      for k in range(i, j):
        h = h * np.uint64(0x100000001B3) + np.uint64(points[k])
      slot = np.int64((h * golden) >> shift)
      while True:
        word = table[slot]
        if word < 0:
          word = words
          table[slot] = word
          starts[word], lengths[word], hashes[word] = i, j - i, h
          words += 1
          break
        if hashes[word] == h and lengths[word] == j - i:
          same = True
          for k in range(j - i):
            if points[starts[word] + k] != points[i + k]:
              same = False
              break
          if same:
            break
        slot = (slot + 1) & mask
      counts[word] += 1
      word_of[tokens] = word
      tokens += 1
      i = j
    begin = end
    token_ends[t] = tokens
  return word_of[:tokens], starts[:words], lengths[:words], counts[:words], token_ends


@_jit
def _utf8(points, starts, lengths):
  """UTF-8 bytes of the words (code point runs), concatenated, and each word's byte length."""
  total = 0
  for w in range(starts.size):
    for k in range(starts[w], starts[w] + lengths[w]):
      c = points[k]
      total += 1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4
  codes = np.empty(total, dtype=np.uint8)
  byte_lengths = np.empty(starts.size, dtype=np.int64)
  n = 0
  for w in range(starts.size):
    first = n
    for k in range(starts[w], starts[w] + lengths[w]):
      c = points[k]
      if c < 0x80:
        codes[n] = c
        n += 1
      elif c < 0x800:
        codes[n], codes[n + 1] = 0xC0 | (c >> 6), 0x80 | (c & 0x3F)
        n += 2
      elif c < 0x10000:
        codes[n], codes[n + 1], codes[n + 2] = 0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
        n += 3
      else:
        codes[n], codes[n + 1] = 0xF0 | (c >> 18), 0x80 | ((c >> 12) & 0x3F)
        codes[n + 2], codes[n + 3] = 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
        n += 4
    byte_lengths[w] = n - first
  return codes, byte_lengths


def pretokenize(texts: Sequence[str]):
  """Compiled pre-tokenization + word counting, as the sampler's `_PRETOKEN.findall` + Counter.

  Returns (UTF-8 bytes of the distinct words in first-occurrence order, their byte lengths, their
  counts, the word of every pre-token in text order, cumulative pre-tokens per text), or None for text the
  compiled path leaves to the reference (lone surrogates, which UTF-8 cannot encode).
  """
  try:
    points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
  except UnicodeEncodeError:
    return None
  text_ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
  word_of, starts, lengths, counts, token_ends = _pretokenize(points, text_ends, _classes())
  codes, byte_lengths = _utf8(points, starts, lengths)
  return codes, byte_lengths, counts, word_of, token_ends


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
  bits = 4
  while (1 << bits) < 2 * max(limit, 1):
    bits += 1
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
  return (keys[:unique], counts[:unique], firsts[:unique], lengths[:unique], sub_starts[:found],
          sub_lengths[:found], sub_unique[:found])


def hash_count(codes: np.ndarray, word_starts: np.ndarray, word_lengths: np.ndarray, word_counts: np.ndarray,
               max_length: int):
  """Compiled `hash_words` + `count_substrings`: (sorted keys, counts, first offsets, lengths,
  substring starts, substring lengths, substring -> sorted key index)."""
  from zett.tokenization._substrings import HASH_MULTIPLIER
  keys, counts, firsts, lengths, starts, sub_lengths, sub_unique = _hash_count(
      codes, word_starts, word_lengths, word_counts, max_length, HASH_MULTIPLIER)
  order = np.argsort(keys)
  rank = np.empty_like(order)
  rank[order] = np.arange(order.size)
  return keys[order], counts[order], firsts[order], lengths[order], starts, sub_lengths, rank[sub_unique]


# -- window ------------------------------------------------------------------------------------------


@_jit
def merge_window(keys, counts, locations, slots, batch_keys, batch_counts, batch_locations, expired_keys,
                 expired_counts, drop_empty, out_keys, out_counts, out_locations, out_slots):
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
  return n


# -- BPE spelling ------------------------------------------------------------------------------------


_NO_PAIR = np.uint64(0xFFFFFFFFFFFFFFFF)  # ids < 2^32, so no real pair key is all ones


@_jit
def _pair_table(pair_keys, pair_ranks, pair_new):
  """Open-addressing table (keys, ranks, new ids) of the merges, 4x oversized: ~1 probe a lookup."""
  bits = 4
  while (1 << bits) < 4 * max(pair_keys.size, 1):
    bits += 1
  keys = np.full(1 << bits, _NO_PAIR, dtype=np.uint64)
  ranks = np.empty(1 << bits, dtype=np.int64)
  new = np.empty(1 << bits, dtype=np.int64)
  mask = (1 << bits) - 1
  for m in range(pair_keys.size):
    slot = np.int64((pair_keys[m] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))
    while keys[slot] != _NO_PAIR and keys[slot] != pair_keys[m]:
      slot = (slot + 1) & mask
    keys[slot], ranks[slot], new[slot] = pair_keys[m], pair_ranks[m], pair_new[m]
  return keys, ranks, new


@_jit
def _pair_slot(keys, left, right):
  """Table slot of the merge (left, right), or -1."""
  key = (np.uint64(left) << np.uint64(32)) | np.uint64(right)
  bits = 0
  while (1 << bits) < keys.size:
    bits += 1
  mask = keys.size - 1
  slot = np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))
  while keys[slot] != _NO_PAIR:
    if keys[slot] == key:
      return slot
    slot = (slot + 1) & mask
  return -1


@_jit
def _bpe(codes, starts, lengths, byte_ids, table_keys, table_ranks, table_new):
  """BPE of each byte string: repeatedly merge the adjacent pair of lowest rank, leftmost first.

  That is the `tokenizers` BPE order (its heap pops the lowest (rank, position)); a stale heap
  entry is skipped there and never exists here.
  """
  out = np.empty(codes.size, dtype=np.int64)
  out_lengths = np.empty(starts.size, dtype=np.int64)
  longest = 1
  for p in range(starts.size):
    longest = max(longest, lengths[p])
  symbols = np.empty(longest, dtype=np.int64)
  slots = np.empty(longest, dtype=np.int64)  # table slot of (symbols[k], symbols[k + 1]); -1: no merge
  written = 0
  for p in range(starts.size):
    m = lengths[p]
    for k in range(m):
      symbols[k] = byte_ids[codes[starts[p] + k]]
    for k in range(m - 1):
      slots[k] = _pair_slot(table_keys, symbols[k], symbols[k + 1])
    while m > 1:
      at = -1
      for k in range(m - 1):
        if slots[k] >= 0 and (at < 0 or table_ranks[slots[k]] < table_ranks[slots[at]]):
          at = k
      if at < 0:
        break
      symbols[at] = table_new[slots[at]]
      for k in range(at + 1, m - 1):
        symbols[k], slots[k] = symbols[k + 1], slots[k + 1]
      m -= 1
      if at > 0:
        slots[at - 1] = _pair_slot(table_keys, symbols[at - 1], symbols[at])
      if at < m - 1:
        slots[at] = _pair_slot(table_keys, symbols[at], symbols[at + 1])
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
    self._encoder, self._exact, self._whole, self._byte_ids = encoder, exact, whole, byte_ids
    self._table = _pair_table(pair_keys, pair_ranks, pair_new)

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
    # Pieces that are base tokens spell as themselves, even where BPE would not reach them.
    exact = {to_byte_level(data): token_id for data, token_id in encoder._exact.items()}
    whole = vocab if model.get("ignore_merges") else {}
    return cls(encoder, exact, whole, byte_ids, pair_keys, values[:, 0].copy(), values[:, 1].copy())

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
      parts.append((rest, *_bpe(codes, rest_starts, rest_lengths, self._byte_ids, *self._table)))
    else:
      selected = np.repeat(clean, rest_lengths)
      clean_lengths = rest_lengths[clean]
      parts.append((rest[clean], *_bpe(codes[selected], np.cumsum(clean_lengths) - clean_lengths, clean_lengths,
                                       self._byte_ids, *self._table)))
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
