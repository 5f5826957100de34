"""Batch-level BPE: merge the most frequent adjacent pair of a batch until a stopping rule fires.

This is the dynamic tokenization step of Feher et al. (2025): the batch is first split by the base
tokenizer, then pairs of adjacent tokens are merged greedily, batch-wide, on the fly.

Rules (the reference implementation in `tests/test_dynamic_merge.py` spells them out again):

* Pairs never span two examples and never cross a pre-token boundary of the base tokenizer.
  Special tokens are never merged.
* Whitespace: a token's bytes must match ``WS* NONWS*`` where WS is an ASCII whitespace byte
  (space, \\t, \\n, \\r, \\v, \\f). Leading whitespace is allowed (" world", as in byte-level BPE
  and SentencePiece once "▁" is mapped back to a space), so is an all-whitespace token ("\\n\\n");
  whitespace after a non-whitespace byte is not ("a b", "word "). A pair is mergeable iff its
  concatenation matches. Non-ASCII whitespace (U+00A0, U+3000, ...) counts as a letter.
* Length: with `max_token_length` set, an occurrence counts (and merges) only if the merged token
  spans at most that many base tokens, so that the hypernetwork sees whole surface forms. Since a
  token's bytes can be spelled by different numbers of base tokens, this is decided per position.
* Counting: a pair's frequency is the number of adjacent positions holding it (overlaps in "aaa"
  count twice). Applying a merge replaces occurrences left to right, without overlap.
* Choice: the highest count wins; ties go to the smallest (left bytes, right bytes), compared as
  byte strings. Tokens are identified by their bytes, so "ab"+"c" and "a"+"bc" both give "abc".
* Stopping: before each merge, stop when `max_merges` merges are done, when the batch is at least
  `target_reduction` shorter (``base - current >= target_reduction * base``), when no mergeable pair
  is left ("no_pairs": word level), or when the best pair's count is below `min_frequency`.

The algorithm is incremental: identical pre-tokens are stored once with a weight, the remaining
tokens form doubly linked lists, every pair keeps its count and its set of positions, and a heap
with lazy deletion yields the best pair. A merge touches only that pair's positions and their
neighbours, so a whole run costs about the number of tokens times a log, instead of
merges x tokens for recounting.

The merger's input and output records (`BaseBatch`, `MergeResult`) and its input checks are in `zett.dynamic.batch`.
"""

from __future__ import annotations

import heapq

import numpy as np

from zett.dynamic.batch import BaseBatch, MergeInputError, MergeResult, check_batch, check_stopping_rules

WHITESPACE_BYTES = frozenset(b" \t\n\r\x0b\x0c")
_WELL_FORMED, _ALL_WHITESPACE, _HAS_WHITESPACE = 1, 2, 4
_SHIFT = 32
_LOW_MASK = (1 << _SHIFT) - 1


def token_shape_flags(token: bytes) -> int:
  """Bit flags: well formed (WS* NONWS*), all whitespace, has whitespace."""
  has_ws = any(b in WHITESPACE_BYTES for b in token)
  stripped = token.lstrip(b" \t\n\r\x0b\x0c")
  well_formed = bool(token) and not any(b in WHITESPACE_BYTES for b in stripped)
  return (_WELL_FORMED * well_formed) | (_ALL_WHITESPACE * (not stripped and bool(token))) | (_HAS_WHITESPACE * has_ws)


def can_merge(left: bytes, right: bytes) -> bool:
  """Whether left+right is a token without internal whitespace (see the module docstring)."""
  return _flags_allow(token_shape_flags(left), token_shape_flags(right))


def _flags_allow(left_flags: int, right_flags: int) -> bool:
  return bool(left_flags & right_flags & _WELL_FORMED) and bool(
    (left_flags & _ALL_WHITESPACE) or not (right_flags & _HAS_WHITESPACE)
  )


def merge_batch(
  batch: BaseBatch,
  *,
  max_merges: int | None = None,
  target_reduction: float | None = None,
  min_frequency: int = 1,
  max_token_length: int | None = None,
  deduplicate_pretokens: bool = True,
) -> MergeResult:
  """Merges the most frequent adjacent pairs of `batch` until a stopping rule fires.

  With no rule given, merging runs until no pair is left: word level.

  Args:
    batch: the batch split by the base tokenizer.
    max_merges: merge budget (number of distinct pair merges).
    target_reduction: stop once the batch has at least this fraction fewer tokens, in [0, 1).
    min_frequency: never merge a pair seen fewer times than this in the batch.
    max_token_length: never make a token of more than this many base tokens (e.g. the
      hypernetwork's surface length).
    deduplicate_pretokens: store identical pre-tokens once with a weight (same output, faster).

  Raises:
    MergeInputError: empty batch or example, mismatched lengths, bad stopping rule.
  """
  check_stopping_rules(max_merges, target_reduction, min_frequency)
  if max_token_length is not None and (not isinstance(max_token_length, (int, np.integer)) or max_token_length < 1):
    raise MergeInputError(f"max_token_length must be an integer >= 1, got {max_token_length!r}")
  check_batch(batch)
  state = _MergeState(batch, deduplicate_pretokens, max_token_length)
  merges: list[tuple[bytes, bytes]] = []
  num_base = state.num_tokens
  while True:
    if max_merges is not None and len(merges) >= max_merges:
      stop_reason = "max_merges"
      break
    if target_reduction is not None and num_base - state.num_tokens >= target_reduction * num_base:
      stop_reason = "target_reduction"
      break
    best = state.pop_best()
    if best is None:
      stop_reason = "no_pairs"
      break
    count, key = best
    if count < min_frequency:
      stop_reason = "min_frequency"
      break
    merges.append(state.apply(key))
  return state.result(merges, stop_reason)


class _MergeState:
  """Linked lists over the (deduplicated) pre-tokens, pair counts, pair positions and the heap."""

  def __init__(self, batch: BaseBatch, deduplicate: bool, max_token_length: int | None):
    self.batch = batch
    self.max_token_length = max_token_length if max_token_length is not None else 1 << 62
    self.symbol_bytes: list[bytes] = []
    self.symbol_of_bytes: dict[bytes, int] = {}
    self.symbol_flags: list[int] = []
    base_symbol: dict[int, int] = {}  # base id -> symbol, for ids in the batch only (vocabularies are big)
    # Segments = pre-tokens with 2+ tokens; everything else can never change.
    self.occurrences: list[list[tuple[int, int, int]]] = []  # per example: (start, length, word index)
    word_index: dict[tuple[int, ...], int] = {}
    word_heads: list[int] = []
    symbols, weights, prev, nxt = [], [], [], []
    word_weight: list[int] = []
    self.num_tokens = 0
    for ids, starts in zip(batch.token_ids, batch.starts_pretoken):
      ids = np.asarray(ids)
      cut = np.asarray(starts, dtype=bool).copy()
      cut[0] = True
      if batch.special_ids:
        special = np.isin(ids, list(batch.special_ids))
        cut |= special
        cut[1:] |= special[:-1]
      bounds = np.append(np.flatnonzero(cut), len(ids))
      self.num_tokens += len(ids)
      example_occurrences = []
      ids_list = ids.tolist()
      for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if end - start < 2:
          continue
        word = tuple(
          base_symbol[i] if i in base_symbol else base_symbol.setdefault(i, self._symbol(batch.id_to_bytes[i]))
          for i in ids_list[start:end]
        )
        w = word_index.get(word) if deduplicate else None
        if w is None:
          w = len(word_heads)
          if deduplicate:
            word_index[word] = w
          head = len(symbols)
          word_heads.append(head)
          word_weight.append(0)
          symbols.extend(word)
          prev.extend(range(head - 1, head + len(word) - 1))
          prev[head] = -1
          nxt.extend(range(head + 1, head + len(word) + 1))
          nxt[-1] = -1
        word_weight[w] += 1
        example_occurrences.append((start, end - start, w))
      self.occurrences.append(example_occurrences)
    self.word_heads, self.word_weight = word_heads, word_weight
    self.symbols, self.prev, self.next = symbols, prev, nxt
    self.base_length = [1] * len(symbols)  # base tokens covered by the node
    self.weight = weights = [0] * len(symbols)
    for w, head in enumerate(word_heads):
      q = head
      while q != -1:
        weights[q] = word_weight[w]
        q = nxt[q]
    self.pair_count: dict[int, int] = {}
    self.pair_positions: dict[int, set[int]] = {}
    flags = self.symbol_flags
    for q in range(len(symbols)):
      r = nxt[q]
      if r != -1 and self.max_token_length >= 2 and _flags_allow(flags[symbols[q]], flags[symbols[r]]):
        key = symbols[q] << _SHIFT | symbols[r]
        self.pair_count[key] = self.pair_count.get(key, 0) + weights[q]
        self.pair_positions.setdefault(key, set()).add(q)
    self.heap = [self._heap_entry(key, count) for key, count in self.pair_count.items()]
    heapq.heapify(self.heap)

  def _symbol(self, token: bytes, flags: int | None = None) -> int:
    s = self.symbol_of_bytes.get(token)
    if s is None:
      s = self.symbol_of_bytes[token] = len(self.symbol_bytes)
      self.symbol_bytes.append(token)
      self.symbol_flags.append(token_shape_flags(token) if flags is None else flags)
    return s

  def _heap_entry(self, key: int, count: int):
    return (-count, self.symbol_bytes[key >> _SHIFT], self.symbol_bytes[key & _LOW_MASK], key)

  def pop_best(self) -> tuple[int, int] | None:
    heap, counts = self.heap, self.pair_count
    while heap:
      neg_count, _, _, key = heap[0]
      if counts.get(key, 0) == -neg_count:
        return -neg_count, key  # left on the heap: popped by `apply`, kept if a rule stops here
      heapq.heappop(heap)  # stale: the count changed after this entry was pushed
    return None

  def _pair_key(self, q: int) -> int | None:
    """Key of the pair starting at position q, or None if q ends its sequence or the pair may not merge."""
    r = self.next[q]
    if r == -1:
      return None
    a, b = self.symbols[q], self.symbols[r]
    if (
      not _flags_allow(self.symbol_flags[a], self.symbol_flags[b])
      or self.base_length[q] + self.base_length[r] > self.max_token_length
    ):
      return None
    return a << _SHIFT | b

  def _remove_pair(self, q: int, changed: set[int]) -> None:
    key = self._pair_key(q)
    if key is None:
      return
    self.pair_count[key] -= self.weight[q]
    self.pair_positions[key].discard(q)
    changed.add(key)

  def _add_pair(self, q: int, changed: set[int]) -> None:
    key = self._pair_key(q)
    if key is None:
      return
    self.pair_count[key] = self.pair_count.get(key, 0) + self.weight[q]
    positions = self.pair_positions.get(key)
    if positions is None:
      positions = self.pair_positions[key] = set()
    positions.add(q)
    changed.add(key)

  def apply(self, key: int) -> tuple[bytes, bytes]:
    heapq.heappop(self.heap)
    a, b = key >> _SHIFT, key & _LOW_MASK
    flags_a, flags_b = self.symbol_flags[a], self.symbol_flags[b]
    # A mergeable pair is well formed; whitespace-only iff both halves are.
    merged = self._symbol(
      self.symbol_bytes[a] + self.symbol_bytes[b],
      _WELL_FORMED | (flags_a & flags_b & _ALL_WHITESPACE) | ((flags_a | flags_b) & _HAS_WHITESPACE),
    )
    symbols, prev, nxt = self.symbols, self.prev, self.next
    changed: set[int] = set()
    # Ascending positions = left to right inside each word, which settles overlaps ("aaa").
    for q in sorted(self.pair_positions[key]):
      r = nxt[q]
      if symbols[q] != a or r == -1 or symbols[r] != b:
        continue  # consumed by the previous occurrence of an overlapping pair
      p, s = prev[q], nxt[r]
      if p != -1:
        self._remove_pair(p, changed)
      self._remove_pair(q, changed)
      self._remove_pair(r, changed)
      symbols[q] = merged
      self.base_length[q] += self.base_length[r]
      symbols[r] = -1
      nxt[q] = s
      if s != -1:
        prev[s] = q
      self.num_tokens -= self.weight[q]
      if p != -1:
        self._add_pair(p, changed)
      self._add_pair(q, changed)
    assert self.pair_count[key] == 0, "a merged pair cannot survive its own merge"
    for k in changed:
      count = self.pair_count[k]
      if count:
        heapq.heappush(self.heap, self._heap_entry(k, count))
      else:
        del self.pair_count[k]
        del self.pair_positions[k]
    return self.symbol_bytes[a], self.symbol_bytes[b]

  def _word_tokens(self, w: int) -> list[tuple[int, int]]:
    """(symbol, base length) of each token of word w."""
    out, q = [], self.word_heads[w]
    while q != -1:
      out.append((self.symbols[q], self.base_length[q]))
      q = self.next[q]
    return out

  def result(self, merges: list[tuple[bytes, bytes]], stop_reason: str) -> MergeResult:
    batch = self.batch
    id_to_bytes = batch.id_to_bytes
    base_vocab_size = len(id_to_bytes)
    base_id_of_bytes: dict[bytes, int] = {}
    # Tokens identified by bytes: a merged token spelled like a base token takes that (non-special) id.
    for i, t in enumerate(id_to_bytes):
      if i not in batch.special_ids:
        base_id_of_bytes.setdefault(t, i)
    # Per word: (offset, length, bytes, id) of its multi-base-token tokens; id = -1 - symbol if new.
    word_merged = []
    for w in range(len(self.word_heads)):
      merged, offset = [], 0
      for symbol, length in self._word_tokens(w):
        if length > 1:
          token = self.symbol_bytes[symbol]
          merged.append((offset, length, token, base_id_of_bytes.get(token, -1 - symbol)))
        offset += length
      word_merged.append(merged)
    first_base_ids: dict[int, tuple[int, ...]] = {}  # new-token symbol -> base ids at first occurrence
    all_pieces, all_ids, all_spans = [], [], []
    for ids, occurrences in zip(batch.token_ids, self.occurrences):
      ids_list = np.asarray(ids).tolist()
      out_ids, starts, ends, pieces = [], [], [], []
      position = 0
      for start, _, w in occurrences:
        for offset, length, token, token_id in word_merged[w]:
          begin = start + offset
          if begin > position:  # untouched base tokens before this merged one
            out_ids.extend(ids_list[position:begin])
            starts.extend(range(position, begin))
            ends.extend(range(position + 1, begin + 1))
            pieces.extend(id_to_bytes[i] for i in ids_list[position:begin])
          out_ids.append(token_id)
          starts.append(begin)
          ends.append(begin + length)
          pieces.append(token)
          if token_id < 0 and token_id not in first_base_ids:
            first_base_ids[token_id] = tuple(ids_list[begin : begin + length])
          position = begin + length
      out_ids.extend(ids_list[position:])
      starts.extend(range(position, len(ids_list)))
      ends.extend(range(position + 1, len(ids_list) + 1))
      pieces.extend(id_to_bytes[i] for i in ids_list[position:])
      all_pieces.append(pieces)
      all_ids.append(np.array(out_ids, dtype=np.int64))
      all_spans.append(np.stack([np.array(starts, np.int32), np.array(ends, np.int32)], axis=1))
    # Symbols are numbered in creation order, so sorting them orders new tokens by first merge.
    new_marks = sorted(first_base_ids, reverse=True)  # -1 - symbol: descending mark = ascending symbol
    new_id_of_mark = {mark: base_vocab_size + k for k, mark in enumerate(new_marks)}
    lookup = np.vectorize(new_id_of_mark.get, otypes=[np.int64]) if new_marks else None
    for k, out_ids in enumerate(all_ids):
      negative = out_ids < 0
      if negative.any():
        assert lookup is not None  # negative ids are the marks of new tokens
        out_ids[negative] = lookup(out_ids[negative])
      all_ids[k] = out_ids.astype(np.int32)
    return MergeResult(
      pieces=all_pieces,
      ids=all_ids,
      spans=all_spans,
      new_tokens=[self.symbol_bytes[-1 - mark] for mark in new_marks],
      new_token_base_ids=[first_base_ids[mark] for mark in new_marks],
      merges=merges,
      stop_reason=stop_reason,
      base_vocab_size=base_vocab_size,
    )
