"""Pre-tokenization and vectorised substring counting for the tokenizer sampler (numpy path).

Substrings are counted over the *distinct* pre-tokens of a batch (weighted by how often each
occurs), never across pre-token boundaries, as 64-bit polynomial hashes computed with numpy. The
window over the last K batches is a sorted key array merged incrementally (searchsorted + insert),
so one batch costs O(distinct substrings) numpy work, not a Python loop over substrings.

This is the reference path; `_fast`, `_fast_pretokenize` and `_fast_bpe` hold compiled twins that
give the same arrays, and the sampler uses them when numba is installed.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import regex

from zett.tokenization._formats import CL100K_PATTERN
from zett.tokenization.byte_level import to_byte_level

# GPT-2's pre-tokenizer split (what `pre_tokenizers.ByteLevel(use_regex=True)` uses): a space leads a word, a number
# or a punctuation run; punctuation never joins letters.
PRETOKEN_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The pre-token splits the sampler can draw from, by name. cl100k (GPT-4's, which most recent byte-level BPEs adopt)
# lets one punctuation character lead a word ("(self", ".get", "_dirs"), splits numbers into runs of <= 3 digits and
# keeps newlines after punctuation ("):\n"): pieces GPT-2's split can never produce.
PRETOKEN_PATTERNS = {"gpt2": PRETOKEN_PATTERN, "cl100k": CL100K_PATTERN}
_PRETOKEN = {name: regex.compile(pattern) for name, pattern in PRETOKEN_PATTERNS.items()}
HASH_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1 prime: odd, so multiplication is invertible mod 2^64


@dataclasses.dataclass
class BatchSubstrings:
  """Distinct substrings of one batch: sorted keys, weighted counts, and where each one is spelled."""

  keys: np.ndarray  # uint64 [N] sorted
  counts: np.ndarray  # int64 [N]
  offsets: np.ndarray  # int64 [N] start in `buffer`
  lengths: np.ndarray  # int64 [N] in bytes
  buffer: str  # byte-level spelling of the batch's distinct pre-tokens, concatenated


@dataclasses.dataclass
class BatchWords:
  """The distinct pre-tokens of a batch as one byte buffer, with every in-word substring's hash."""

  codes: np.ndarray  # uint8 [P] bytes of all words, concatenated
  joined: bytes  # the same bytes
  word_starts: np.ndarray  # int64 [W]
  word_lengths: np.ndarray  # int64 [W]
  max_length: int  # longest substring counted, in bytes
  hashes: np.ndarray | None = None  # uint64 [P, max_length + 1]; column l = hash of bytes [p, p + l) (numpy path)
  valid: np.ndarray | None = None  # bool [P, max_length + 1]; the substring stays inside its word (l >= 2)
  substring_starts: np.ndarray | None = None  # int64 [S] start of each valid substring (set by counting)
  substring_lengths: np.ndarray | None = None  # int64 [S]
  substring_unique: np.ndarray | None = None  # int64 [S] index into the batch's sorted distinct keys
  unique_keys: np.ndarray | None = None  # uint64 sorted distinct keys of the batch


def pretokenize(
  texts: Sequence[str], pattern: str = "gpt2"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A batch's pre-tokens under `PRETOKEN_PATTERNS[pattern]`, deduplicated.

  Returns (UTF-8 bytes of the distinct words in first-occurrence order, their byte lengths, their
  counts, the word of every pre-token in text order, cumulative pre-tokens per text). The
  reference for `_fast_pretokenize.pretokenize`.
  """
  counter: collections.Counter[str] = collections.Counter()
  split = _PRETOKEN[pattern]
  per_text = [split.findall(text) for text in texts]
  for words in per_text:
    counter.update(words)
  index = {word: i for i, word in enumerate(counter)}
  token_ends = np.cumsum(np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text)))
  word_ids = np.fromiter(
    map(index.__getitem__, itertools.chain.from_iterable(per_text)),
    dtype=np.int64,
    count=int(token_ends[-1]) if token_ends.size else 0,
  )
  utf8 = [w.encode("utf-8") for w in counter]
  codes = np.frombuffer(b"".join(utf8), dtype=np.uint8)
  word_lengths = np.fromiter(map(len, utf8), dtype=np.int64, count=len(utf8))
  counts = np.fromiter(counter.values(), dtype=np.int64, count=len(utf8))
  return codes, word_lengths, counts, word_ids, token_ends


def hash_words(codes: np.ndarray, word_starts: np.ndarray, word_lengths: np.ndarray, max_length: int) -> BatchWords:
  """Polynomial hashes of every in-word, whole-character substring of 2..max_length bytes.

  Args:
    codes: uint8 [P] UTF-8 bytes of the distinct words, concatenated; word_starts/word_lengths: int64 [W].
  """
  word_of = np.repeat(np.arange(word_lengths.size), word_lengths)
  size = codes.size
  hashes = np.zeros((size, max_length + 1), dtype=np.uint64)
  valid = np.zeros((size, max_length + 1), dtype=bool)
  values = codes.astype(np.uint64) + np.uint64(1)
  current = values.copy()
  hashes[:, 1] = current
  # Pieces are whole characters (as in SentencePiece's Unigram): a substring may not start or end
  # inside a UTF-8 sequence. Lone bytes of a character stay covered by the 256 byte pieces.
  boundary = np.ones(size + 1, dtype=bool)
  boundary[:size] = (codes & 0xC0) != 0x80
  with np.errstate(over="ignore"):
    for length in range(2, max_length + 1):
      if size < length:
        break
      current = current[:-1] * HASH_MULTIPLIER + values[length - 1 :]
      count = size - length + 1
      hashes[:count, length] = current
      valid[:count, length] = (
        (word_of[:count] == word_of[length - 1 :]) & boundary[:count] & boundary[length : length + count]
      )
  return BatchWords(codes, codes.tobytes(), word_starts, word_lengths, max_length, hashes, valid)


def count_substrings(words: BatchWords, word_counts: np.ndarray) -> BatchSubstrings:
  """Weighted counts (by word occurrences) of every in-word substring of 2..max_length bytes."""
  assert words.valid is not None and words.hashes is not None  # the numpy path's hash_words fills them
  word_of = np.repeat(np.arange(word_counts.size), words.word_lengths)
  starts, lengths = np.nonzero(words.valid)
  keys = words.hashes[starts, lengths]
  # np.unique(return_index, return_inverse) sorts stably; any occurrence spells a key, so a plain
  # sort and reduceat do the same job faster.
  order = np.argsort(keys)
  sorted_keys = keys[order]
  is_first = np.ones(sorted_keys.size, dtype=bool)
  is_first[1:] = sorted_keys[1:] != sorted_keys[:-1]
  group_starts = np.flatnonzero(is_first)
  unique = sorted_keys[group_starts]
  # Spell each key at its first occurrence in (start, length) order, as the compiled path does.
  first = np.minimum.reduceat(order, group_starts) if keys.size else np.zeros(0, dtype=np.int64)
  inverse = np.empty(keys.size, dtype=np.int64)
  inverse[order] = np.cumsum(is_first) - 1
  weights = word_counts[word_of[starts]][order]
  counts = np.add.reduceat(weights, group_starts) if keys.size else np.zeros(0, dtype=np.int64)
  words.substring_starts, words.substring_lengths = starts, lengths
  words.substring_unique, words.unique_keys = inverse.reshape(-1), unique
  return BatchSubstrings(
    unique, counts, starts[first].astype(np.int64), lengths[first].astype(np.int64), to_byte_level(words.joined)
  )


def segment(
  words: BatchWords,
  piece_keys: np.ndarray,
  piece_ids: np.ndarray,
  piece_scores: np.ndarray,
  byte_ids: np.ndarray,
  byte_score: float,
) -> tuple[np.ndarray, np.ndarray]:
  """Unigram Viterbi over every word at once: the highest-scoring split into pieces and bytes.

  Args:
    piece_keys: uint64 sorted hashes of the vocabulary's multi-byte pieces; piece_ids/scores aligned.
    byte_ids: int64 [256] id of each single-byte piece; byte_score: their common score.

  Returns:
    (token ids in word order, CSR offsets [W + 1]) -- the tokens of word w are ids[offsets[w]:offsets[w+1]].
  Matches `tokenizers`' Unigram (forward DP, first best kept) on the same pieces and scores.
  """
  hashes, unique_keys, unique_of = words.hashes, words.unique_keys, words.substring_unique
  starts, lengths = words.substring_starts, words.substring_lengths
  assert hashes is not None and unique_keys is not None and unique_of is not None  # set by count_substrings
  assert starts is not None and lengths is not None
  size, width = hashes.shape
  scores = np.full((size, width), -np.inf)
  ids = np.full((size, width), -1, dtype=np.int64)
  scores[:, 1] = byte_score
  ids[:, 1] = byte_ids[words.codes]
  if piece_keys.size and starts.size:
    # Match the batch's distinct keys (sorted, so searchsorted walks forward), then spread.
    index = np.minimum(np.searchsorted(piece_keys, unique_keys), piece_keys.size - 1)
    index[piece_keys[index] != unique_keys] = -1
    per_substring = index[unique_of]
    hit = per_substring >= 0
    scores[starts[hit], lengths[hit]] = piece_scores[per_substring[hit]]
    ids[starts[hit], lengths[hit]] = piece_ids[per_substring[hit]]
  # Prefix scores live in a gapped index space: word w's prefixes are slots start_w + w + k,
  # k = 0..len_w, so every word has its own zero-score start slot.
  num_words = words.word_starts.size
  slot_starts = words.word_starts + np.arange(num_words)
  best = np.full(size + num_words + 1, -np.inf)
  back = np.zeros(size + num_words + 1, dtype=np.int64)
  best[slot_starts] = 0.0
  order = np.argsort(-words.word_lengths, kind="stable")
  sorted_slots, sorted_starts = slot_starts[order], words.word_starts[order]
  sorted_lengths = words.word_lengths[order]
  active_counts = np.searchsorted(-sorted_lengths, -np.arange(1, int(sorted_lengths.max(initial=0)) + 1), side="right")
  for end in range(1, active_counts.size + 1):
    count = active_counts[end - 1]
    # Longest last piece first: on equal scores `tokenizers` keeps the path found first, i.e. the
    # one whose last piece starts earliest (its forward pass visits starts in order).
    span = np.arange(min(end, width - 1), 0, -1)
    ends = sorted_slots[:count] + end
    candidates = best[ends[:, None] - span] + scores[(sorted_starts[:count] + end)[:, None] - span, span]
    choice = candidates.argmax(axis=1)
    best[ends] = candidates.max(axis=1)
    back[ends] = span[choice]
  # Walk back from every word's end.
  token_starts, token_lengths = [], []
  nonempty = np.flatnonzero(words.word_lengths > 0)
  position = slot_starts[nonempty] + words.word_lengths[nonempty]
  floor, word = slot_starts[nonempty], nonempty
  while position.size:
    length = back[position]
    position = position - length
    token_starts.append(position - word)  # back to byte positions
    token_lengths.append(length)
    keep = position > floor
    position, floor, word = position[keep], floor[keep], word[keep]
  if not token_starts:
    return np.zeros(0, dtype=np.int64), np.zeros(words.word_starts.size + 1, dtype=np.int64)
  all_starts = np.concatenate(token_starts)
  all_lengths = np.concatenate(token_lengths)
  order = np.argsort(all_starts, kind="stable")
  all_starts, all_lengths = all_starts[order], all_lengths[order]
  token_ids = ids[all_starts, all_lengths]
  word_of_token = np.searchsorted(words.word_starts, all_starts, side="right") - 1
  offsets = np.zeros(words.word_starts.size + 1, dtype=np.int64)
  np.cumsum(np.bincount(word_of_token, minlength=words.word_starts.size), out=offsets[1:])
  return token_ids, offsets


class SubstringWindow:
  """Substring counts summed over the last `capacity` batches, with a spelling for each key.

  Each key's spelling is located in the newest batch that contains it (that batch stays in the
  window as long as the key does), packed as batch << 40 | offset << 8 | length. `slots` holds
  each key's entry in the sampler's surface cache (-1: not spelled yet), so a piece chosen again
  costs no lookup; it goes when the key leaves the window.
  """

  def __init__(self, capacity: int, merge=None):
    self.capacity = capacity
    self.merge = merge  # compiled `merge_window`, or None for the numpy path
    self.batches: list[tuple[int, BatchSubstrings]] = []  # (batch number, substrings), oldest first
    self.keys = np.zeros(0, dtype=np.uint64)
    self.counts = np.zeros(0, dtype=np.int64)
    self.locations = np.zeros(0, dtype=np.int64)
    self.slots = np.zeros(0, dtype=np.int64)
    self._buffers: dict[int, str] = {}
    self._next_batch = 0
    self._spare: tuple[np.ndarray, ...] = ()  # the compiled merge writes here, then the two swap

  def _merge(self, batch: BatchSubstrings, locations: np.ndarray, expired) -> None:
    assert self.merge is not None  # add() comes here only with the compiled merge
    needed = self.keys.size + batch.keys.size
    spare = self._spare
    if not spare or spare[0].size < needed:  # reused, not reallocated: fresh pages cost page faults
      capacity = needed + needed // 2
      spare = (
        np.empty(capacity, np.uint64),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
      )
    none = np.zeros(0, dtype=np.uint64)
    n = self.merge(
      self.keys,
      self.counts,
      self.locations,
      self.slots,
      batch.keys,
      batch.counts,
      locations,
      none if expired is None else expired[1].keys,
      none.astype(np.int64) if expired is None else expired[1].counts,
      expired is not None,
      *spare,
    )
    current = (self.keys, self.counts, self.locations, self.slots)
    self._spare = tuple(array.base if array.base is not None else array for array in current)
    self.keys, self.counts, self.locations, self.slots = (array[:n] for array in spare)

  def add(self, batch: BatchSubstrings) -> None:
    number = self._next_batch
    self._next_batch += 1
    expired = self.batches.pop(0) if len(self.batches) >= self.capacity else None
    locations = (number << 40) | (batch.offsets << 8) | batch.lengths
    if self.merge is not None:
      self._merge(batch, locations, expired)
    else:
      self._add_numpy(batch, locations, expired)
    if expired is not None:
      del self._buffers[expired[0]]
    self.batches.append((number, batch))
    self._buffers[number] = batch.buffer

  def _add_numpy(self, batch: BatchSubstrings, locations: np.ndarray, expired) -> None:
    if expired is not None:  # subtract first, compact once at the end
      self.counts[np.searchsorted(self.keys, expired[1].keys)] -= expired[1].counts
    index = np.searchsorted(self.keys, batch.keys)
    found = index < self.keys.size
    found[found] = self.keys[index[found]] == batch.keys[found]
    hit = index[found]
    self.counts[hit] += batch.counts[found]
    self.locations[hit] = locations[found]
    new = ~found
    where = index[new]
    self.keys = np.insert(self.keys, where, batch.keys[new])
    self.counts = np.insert(self.counts, where, batch.counts[new])
    self.locations = np.insert(self.locations, where, locations[new])
    self.slots = np.insert(self.slots, where, -1)
    if expired is not None:
      keep = self.counts > 0
      self.keys, self.counts = self.keys[keep], self.counts[keep]
      self.locations, self.slots = self.locations[keep], self.slots[keep]

  def lengths(self, positions: np.ndarray) -> np.ndarray:
    """Byte length of the keys at `positions`."""
    return self.locations[positions] & 0xFF

  def spellings(self, positions: np.ndarray) -> list[str]:
    """Byte-level spelling of the keys at `positions` (indices into `keys`)."""
    buffers = self._buffers
    locations = self.locations[positions]
    return [
      buffers[b][o : o + n]
      for b, o, n in zip(
        (locations >> 40).tolist(), ((locations >> 8) & 0xFFFFFFFF).tolist(), (locations & 0xFF).tolist()
      )
    ]
