"""Compiled BPE: spells new sampled pieces in a byte-level BPE base's subtokens.

Same ids as the `tokenizers` Rust model behind `SurfaceEncoder`, without its ~5 us per piece of
Python-API overhead (a sampler step spells ~2,000 new pieces).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np

from zett.tokenization._fast import AVAILABLE, _jit, _table_bits
from zett.tokenization.byte_level import ModelKind, bytes_to_unicode, from_byte_level, to_byte_level

_NO_PAIR = np.uint64(0xFFFFFFFFFFFFFFFF)  # ids < 2^32, so no real pair key is all ones


@_jit
def _pair_table(pair_keys, pair_ranks, pair_new):
  """Open-addressing table (keys, ranks, new ids) of the merges, 4x oversized: ~1 probe a lookup."""
  bits = _table_bits(pair_keys.size, 4)
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

  def __init__(
    self,
    encoder,
    whole: dict[str, int],
    byte_ids: np.ndarray,
    pair_keys: np.ndarray,
    pair_ranks: np.ndarray,
    pair_new: np.ndarray,
  ):
    self._encoder, self._whole, self._byte_ids = encoder, whole, byte_ids
    self._exact: dict[str, int] | None = None
    self._whole_bytes: dict[bytes, int] | None = None
    self._table = _pair_table(pair_keys, pair_ranks, pair_new)

  @classmethod
  def create(cls, encoder) -> BpeSpeller | None:
    base = encoder.base
    if not AVAILABLE or base.kind != ModelKind.BYTE_LEVEL_BPE:
      return None
    model = json.loads(base.backend.to_str()).get("model", {})
    if (
      model.get("type") != "BPE"
      or model.get("dropout")
      or model.get("byte_fallback")
      or model.get("continuing_subword_prefix")
      or model.get("end_of_word_suffix")
    ):
      return None
    vocab: dict[str, int] = model["vocab"]
    # A byte without a token (-1) is dropped by the model; the encoder spells such pieces around it.
    byte_ids = np.array([vocab.get(bytes_to_unicode()[b], -1) for b in range(256)], dtype=np.int64)
    merges = model["merges"]
    pairs = [merge.split(" ", 1) for merge in merges] if merges and isinstance(merges[0], str) else merges

    def lookup(strings) -> np.ndarray:
      return np.fromiter(map(vocab.get, strings, itertools.repeat(-1)), dtype=np.int64, count=len(pairs))

    left, right = lookup(p[0] for p in pairs), lookup(p[1] for p in pairs)
    merged = lookup(p[0] + p[1] for p in pairs)
    if (left < 0).any() or (right < 0).any() or (merged < 0).any():
      return None  # the Rust model refuses such a file; do not guess
    # Like the Rust builder: a later duplicate merge overwrites an earlier one (keep each key's last rank).
    keys = (left.astype(np.uint64) << np.uint64(32)) | right.astype(np.uint64)
    unique_keys, first_from_end = np.unique(keys[::-1], return_index=True)
    last = keys.size - 1 - first_from_end
    whole = vocab if model.get("ignore_merges") else {}
    return cls(encoder, whole, byte_ids, unique_keys, last, merged[last])

  def spell(self, spellings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(flat base ids, ids per spelling) for non-empty byte-level spellings."""
    if self._exact is None:  # pieces that are base tokens spell as themselves, even where BPE would not reach them
      self._exact = {to_byte_level(data): token_id for data, token_id in self._encoder._exact.items()}
    exact = self._lookup(self._exact, self._whole, spellings)
    rest = np.flatnonzero(exact < 0)
    strings = [spellings[i] for i in rest.tolist()]
    codes = np.frombuffer(from_byte_level("".join(strings)), dtype=np.uint8)
    return self._spell_rest(
      exact,
      rest,
      codes,
      np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)),
      lambda rows: self._encoder.encode_byte_level([strings[i] for i in rows]),
    )

  def spell_bytes(self, pieces: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """`spell` for raw byte strings: no round trip through the byte-level alphabet."""
    if self._whole and self._whole_bytes is None:
      self._whole_bytes = {from_byte_level(piece): token_id for piece, token_id in self._whole.items()}
    exact = self._lookup(self._encoder._exact, self._whole_bytes, pieces)
    rest = np.flatnonzero(exact < 0)
    chosen = [pieces[i] for i in rest.tolist()]
    codes = np.frombuffer(b"".join(chosen), dtype=np.uint8)
    return self._spell_rest(
      exact,
      rest,
      codes,
      np.fromiter(map(len, chosen), dtype=np.int64, count=len(chosen)),
      lambda rows: self._encoder.encode_ids([chosen[i] for i in rows]),
    )

  @staticmethod
  def _lookup(exact_of: dict, whole_of: dict | None, keys: Sequence) -> np.ndarray:
    """Id of each key that is a base token (or, with ignore_merges, a whole vocabulary entry), else -1."""
    exact = np.fromiter(map(exact_of.get, keys, itertools.repeat(-1)), dtype=np.int64, count=len(keys))
    if whole_of:
      whole = np.fromiter(map(whole_of.get, keys, itertools.repeat(-1)), dtype=np.int64, count=len(keys))
      exact = np.where(exact >= 0, exact, whole)
    return exact

  def _spell_rest(
    self, exact: np.ndarray, rest: np.ndarray, codes: np.ndarray, rest_lengths: np.ndarray, spell_with_encoder
  ) -> tuple[np.ndarray, np.ndarray]:
    """BPE of the `rest` rows (their bytes concatenated in `codes`), merged with the exact ids."""
    lengths = np.ones(exact.size, dtype=np.int64)
    if not rest.size:
      return exact, lengths
    rest_starts = np.cumsum(rest_lengths) - rest_lengths
    # A byte the base has no token for (rare: controls, non-UTF-8 bytes) takes the encoder's rule.
    clean = np.minimum.reduceat(self._byte_ids[codes], rest_starts) >= 0
    parts = []
    if clean.all():
      parts.append((rest, *_bpe(codes, rest_starts, rest_lengths, self._byte_ids, *self._table)))
    else:
      selected = np.repeat(clean, rest_lengths)
      clean_lengths = rest_lengths[clean]
      parts.append(
        (
          rest[clean],
          *_bpe(codes[selected], np.cumsum(clean_lengths) - clean_lengths, clean_lengths, self._byte_ids, *self._table),
        )
      )
      rows = spell_with_encoder(np.flatnonzero(~clean).tolist())
      row_lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
      parts.append(
        (
          rest[~clean],
          np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(row_lengths.sum())),
          row_lengths,
        )
      )
    for where, _, counts in parts:
      lengths[where] = counts
    flat = np.repeat(exact, lengths)
    starts = np.cumsum(lengths) - lengths
    for where, ids, counts in parts:
      flat[np.repeat(starts[where] - (np.cumsum(counts) - counts), counts) + np.arange(ids.size)] = ids
    return flat, lengths
