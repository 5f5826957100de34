"""Surface forms: every target token spelled as a short sequence of base-model subtokens.

The hypernetwork reads a target token as the base subtokens that spell its bytes. Spelling uses
the base tokenizer's *model* only (no normalizer, no pre-tokenizer), so a token that crosses a base
pre-token boundary (" the.", "\\n\\n    ") still decomposes into base tokens instead of failing.
All tokens go through the Rust model in one `encode_batch_fast` call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tokenizers

from zett.tokenization.byte_level import ModelKind, TokenizerError, byte_fallback_value, from_byte_level, to_byte_level
from zett.tokenization.tokenizer import ROLES, Tokenizer

DEFAULT_SURFACE_LENGTH = 7
"""L: the most base subtokens that spell one target token, unless a config says otherwise (7 in every published
hypernetwork; longer spellings keep their first L subtokens)."""


@dataclasses.dataclass(frozen=True)
class SurfaceForms:
  """Base-subtoken spellings of a vocabulary.

  ids [V, L] int32: base vocabulary ids, rows padded with `pad_id` after `lengths`.
  lengths [V] int32: 1..L for every row.
  special_base_ids [V] int32: the base special token a target special maps to, else -1
    (the hypernetwork copies that base row instead of predicting).
  num_truncated: rows whose spelling was longer than L (kept: the first L subtokens).
  num_unknown: rows that contain the base's unk id (a byte the base cannot spell).
  """

  ids: np.ndarray
  lengths: np.ndarray
  special_base_ids: np.ndarray
  num_truncated: int
  num_unknown: int

  @property
  def special_mask(self) -> np.ndarray:
    return self.special_base_ids >= 0

  @property
  def mask(self) -> np.ndarray:
    """bool [V, L]: True on real subtokens."""
    return np.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]


def pack_rows(rows: Sequence[Sequence[int]], max_length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
  """Ragged id lists -> (ids [N, L] int32 padded, lengths [N] int32 clipped to L, number truncated)."""
  full_lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
  flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(full_lengths.sum()))
  return pack_flat(flat, full_lengths, max_length, pad_id)


def pack_flat(
  flat: np.ndarray, full_lengths: np.ndarray, max_length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
  """Concatenated rows + their lengths -> (ids [N, L] int32 padded, lengths [N] clipped, truncated)."""
  full_lengths = np.asarray(full_lengths, dtype=np.int64)
  ids = np.full((full_lengths.size, max_length), pad_id, dtype=np.int32)
  starts = np.cumsum(full_lengths) - full_lengths
  columns = np.arange(flat.size) - np.repeat(starts, full_lengths)
  keep = columns < max_length
  ids[np.repeat(np.arange(full_lengths.size), full_lengths)[keep], columns[keep]] = flat[keep]
  lengths = np.minimum(full_lengths, max_length).astype(np.int32)
  return ids, lengths, int((full_lengths > max_length).sum())


_NOT_BUILT = object()


class SurfaceEncoder:
  """Spells byte strings with a base tokenizer's model; exact base tokens map to their own id."""

  def __init__(self, base: Tokenizer):
    self.base = base
    self._model_only = tokenizers.Tokenizer(base.backend.model)
    self._unk_id = base.roles.get("unk")
    pieces = base.id_to_piece
    self._exact: dict[bytes, int] = {}
    # Byte-fallback pieces last: "A" and "<0x41>" share bytes, the ordinary piece is the spelling.
    order = range(len(pieces))
    if base.kind in (ModelKind.SENTENCEPIECE_BPE, ModelKind.UNIGRAM):

      def fallback_last(i: int) -> tuple[bool, int]:
        piece = pieces[i]
        return piece is not None and byte_fallback_value(piece) is not None, i

      order = sorted(order, key=fallback_last)
    for token_id in order:
      if pieces[token_id] is not None and token_id not in base.special_ids:
        self._exact.setdefault(base.vocab_bytes[token_id], token_id)
    self._exact_spelled: dict[str, int] | None = None
    self._speller: Any = _NOT_BUILT  # compiled BPE (`_fast_bpe.BpeSpeller`), None where it does not apply
    self._gap_pattern = None
    self._byte_ids = np.array([self._exact.get(bytes([b]), -1) for b in range(256)], dtype=np.int64)
    if base.kind in (ModelKind.SENTENCEPIECE_BPE, ModelKind.UNIGRAM):
      for token_id, piece in enumerate(pieces):
        value = byte_fallback_value(piece) if piece is not None else None
        if value is not None:
          self._byte_ids[value] = token_id
    self._present = bytes(int(b) for b in np.flatnonzero(self._byte_ids >= 0))
    # A byte-level BPE model silently drops a byte it has no token for: spell around the gap.
    self._has_gaps = len(self._present) < 256 and base.kind in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM)

  def _spell_with_gaps(self, data: bytes) -> list[int]:
    """Spellable runs through the model; each byte the base lacks becomes unk (or an error)."""
    present = set(self._present)
    ids: list[int] = []
    for spellable, run in itertools.groupby(data, key=lambda b: b in present):
      run = bytes(run)
      if spellable:
        ids += self.encode_ids([run])[0]
      else:
        ids += [self._byte_id(b, data) for b in run]
    return ids

  @property
  def missing_bytes(self) -> list[int]:
    """Bytes the base cannot spell as a single token (no piece, no byte fallback)."""
    return [int(b) for b in np.flatnonzero(self._byte_ids < 0)]

  def _model_string(self, data: bytes) -> str | None:
    """The base model's input alphabet for `data`, or None when it needs per-byte handling."""
    if self.base.kind in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM):
      return to_byte_level(data)
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError:
      return None
    if self.base.kind == ModelKind.WORDPIECE:
      return text[1:] if text.startswith(" ") else text
    return text.replace(" ", "▁")

  def _byte_id(self, byte: int, data: bytes) -> int:
    token_id = int(self._byte_ids[byte])
    if token_id >= 0:
      return token_id
    if self._unk_id is None:
      raise TokenizerError(
        f"{self.base.name}: cannot spell byte 0x{byte:02x} (in {data!r}): no byte token, no "
        f"byte fallback and no unk token; bytes it cannot spell: {self.missing_bytes[:16]}"
      )
    return self._unk_id

  def _spell_mixed(self, data: bytes) -> list[int]:
    # Invalid UTF-8 (a byte-level token holding part of a character): valid runs through the
    # model, stray bytes through the byte pieces.
    text = data.decode("utf-8", errors="surrogateescape")
    ids: list[int] = []
    for is_byte, run in itertools.groupby(text, key=lambda c: "\udc80" <= c <= "\udcff"):
      run = "".join(run)
      if is_byte:
        ids += [self._byte_id(ord(c) - 0xDC00, data) for c in run]
      else:
        ids += self.encode_ids([run.encode("utf-8")])[0]
    return ids

  def encode_ids(self, pieces: Sequence[bytes]) -> list[list[int]]:
    """Base ids spelling each byte string (no length limit)."""
    rows: list[list[int] | None] = [None] * len(pieces)
    batch_index, batch_strings = [], []
    for index, data in enumerate(pieces):
      exact = self._exact.get(data)
      if exact is not None:
        rows[index] = [exact]
        continue
      if not data:
        raise TokenizerError("cannot spell an empty token")
      if self._has_gaps and data.translate(None, self._present):
        rows[index] = self._spell_with_gaps(data)
        continue
      string = self._model_string(data)
      if string is None:
        rows[index] = self._spell_mixed(data)
      else:
        batch_index.append(index)
        batch_strings.append(string)
    if batch_strings:
      encodings = self._model_only.encode_batch_fast(batch_strings, add_special_tokens=False)
      for index, encoding in zip(batch_index, encodings):
        ids = encoding.ids
        if not ids:  # e.g. WordPiece gives nothing for a lone space
          ids = [self._byte_id(b, pieces[index]) for b in pieces[index]]
        rows[index] = ids
    return rows  # type: ignore[return-value]

  def encode_byte_level(self, spellings: Sequence[str]) -> list[list[int]]:
    """Like `encode_ids` for pieces spelled in the GPT-2 byte alphabet (no conversion for byte-level bases)."""
    if self.base.kind not in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM):
      return self.encode_ids([from_byte_level(s) for s in spellings])
    if self._exact_spelled is None:
      self._exact_spelled = {to_byte_level(data): token_id for data, token_id in self._exact.items()}
    exact = self._exact_spelled
    rows: list[list[int] | None] = [None] * len(spellings)
    batch_index, batch_strings = [], []
    for index, spelling in enumerate(spellings):
      token_id = exact.get(spelling)
      if token_id is None:
        if self._has_gaps:
          data = from_byte_level(spelling)
          if data.translate(None, self._present):
            rows[index] = self._spell_with_gaps(data)
            continue
        batch_index.append(index)
        batch_strings.append(spelling)
      else:
        rows[index] = [token_id]
    if batch_strings:
      for index, encoding in zip(
        batch_index, self._model_only.encode_batch_fast(batch_strings, add_special_tokens=False)
      ):
        rows[index] = encoding.ids
    return rows  # type: ignore[return-value]

  def encode_bytes_packed(
    self, pieces: Sequence[bytes], max_length: int, pad_id: int = 0
  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids [N, L], lengths [N], truncated) for non-empty byte strings; compiled BPE where it applies."""
    if self._speller is _NOT_BUILT:
      from zett.tokenization import _fast_bpe

      self._speller = _fast_bpe.BpeSpeller.create(self)
    if self._speller is not None:
      flat, lengths = self._speller.spell_bytes(pieces)
      return pack_flat(flat, lengths, max_length, pad_id)
    if self.base.kind in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM):
      return self.encode_byte_level_packed([to_byte_level(p) for p in pieces], max_length, pad_id)
    return pack_rows(self.encode_ids(pieces), max_length, pad_id)

  def encode_byte_level_packed(
    self, spellings: Sequence[str], max_length: int, pad_id: int = 0
  ) -> tuple[np.ndarray, np.ndarray, int]:
    """`encode_byte_level` packed to (ids [N, L], lengths [N], truncated): one Rust call, no per-row lists."""
    if self.base.kind not in (ModelKind.BYTE_LEVEL_BPE, ModelKind.BYTE_LEVEL_UNIGRAM):
      return pack_rows(self.encode_byte_level(spellings), max_length, pad_id)
    if self._has_gaps:
      if self._gap_pattern is None:
        lacking = bytes(sorted(set(range(256)) - set(self._present)))
        self._gap_pattern = re.compile("[" + re.escape(to_byte_level(lacking)) + "]")
      gap = self._gap_pattern.search
      with_gap = [i for i, spelling in enumerate(spellings) if gap(spelling)]
      if with_gap:  # rare: spell those rows around the gap, the rest in one call
        clean = np.ones(len(spellings), dtype=bool)
        clean[with_gap] = False
        rest = np.flatnonzero(clean)
        ids = np.full((len(spellings), max_length), pad_id, dtype=np.int32)
        lengths = np.zeros(len(spellings), dtype=np.int32)
        ids[rest], lengths[rest], truncated = self._packed([spellings[i] for i in rest.tolist()], max_length, pad_id)
        ids[with_gap], lengths[with_gap], gap_truncated = pack_rows(
          self.encode_byte_level([spellings[i] for i in with_gap]), max_length, pad_id
        )
        return ids, lengths, truncated + gap_truncated
    return self._packed(spellings, max_length, pad_id)

  def _packed(self, spellings: Sequence[str], max_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    if self._exact_spelled is None:
      self._exact_spelled = {to_byte_level(data): token_id for data, token_id in self._exact.items()}
    exact = np.fromiter(
      map(self._exact_spelled.get, spellings, itertools.repeat(-1)), dtype=np.int64, count=len(spellings)
    )
    rest = np.flatnonzero(exact < 0)
    lengths = np.ones(len(spellings), dtype=np.int64)
    flat = exact
    if rest.size:
      # All words in one pre-tokenized call: one Encoding instead of one per piece.
      encoding = self._model_only.encode(
        [spellings[i] for i in rest.tolist()], is_pretokenized=True, add_special_tokens=False
      )
      rest_ids = np.asarray(encoding.ids, dtype=np.int64)
      rest_lengths = np.bincount(np.asarray(encoding.word_ids, dtype=np.int64), minlength=rest.size)
      lengths[rest] = rest_lengths
      starts = np.cumsum(lengths) - lengths
      flat = np.empty(int(lengths.sum()), dtype=np.int64)
      single = exact >= 0
      flat[starts[single]] = exact[single]
      rest_starts = np.cumsum(rest_lengths) - rest_lengths
      flat[np.repeat(starts[rest] - rest_starts, rest_lengths) + np.arange(rest_ids.size)] = rest_ids
    return pack_flat(flat, lengths, max_length, pad_id)

  def encode(self, pieces: Sequence[bytes], max_length: int = DEFAULT_SURFACE_LENGTH, pad_id: int = 0):
    """(ids [N, L] int32, lengths [N] int32, num_truncated, num_unknown) for byte strings."""
    rows = self.encode_ids(pieces)
    ids, lengths, truncated = pack_rows(rows, max_length, pad_id)
    unknown = 0 if self._unk_id is None else int(np.any(ids == self._unk_id, axis=1).sum())
    return ids, lengths, truncated, unknown


_CACHE: dict[tuple, SurfaceForms] = {}
_CACHE_ENTRIES = 8


def _fingerprint(tokenizer: Tokenizer) -> str:
  cached = tokenizer.__dict__.get("_surface_fingerprint")
  if cached is None:
    vocab = tokenizer.vocab_bytes
    digest = hashlib.sha256(b"".join(vocab))
    digest.update(np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab)).tobytes())
    digest.update(repr(sorted(tokenizer.special_ids)).encode())
    cached = tokenizer.__dict__["_surface_fingerprint"] = digest.hexdigest()  # frozen: bypass __setattr__
  return cached


def _special_target_to_base(target: Tokenizer, base: Tokenizer) -> dict[int, int]:
  """Target special id -> base special id, by identical content first, then by role."""
  mapping = {}
  base_by_content = base.special_tokens
  for token_id in sorted(target.special_ids):
    piece = target.id_to_piece[token_id]
    if piece is not None and piece in base_by_content:
      mapping[token_id] = base_by_content[piece]
      continue
    for role in ROLES:  # a token can hold several roles (Qwen: eos and pad)
      if target.roles.get(role) == token_id and role in base.roles:
        mapping[token_id] = base.roles[role]
        break
  return mapping


def surface_forms(
  target: Tokenizer,
  base: Tokenizer,
  max_length: int = DEFAULT_SURFACE_LENGTH,
  pad_id: int = 0,
  encoder: SurfaceEncoder | None = None,
) -> SurfaceForms:
  """Spell every token of `target` in `base` subtokens.

  Tokens whose bytes are a base token are length-1 rows of that id (the target's own id when
  target is base). Target specials map to the base special of the same role (bos/eos/pad/unk) or
  content; a special with no counterpart is spelled from its text like any token.
  Results are cached per (target, base, max_length, pad_id).
  """
  if max_length < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}")
  key = (_fingerprint(target), _fingerprint(base), max_length, pad_id)
  if key in _CACHE:
    return _CACHE[key]
  vocab_size = target.vocab_size
  special_base_ids = np.full(vocab_size, -1, dtype=np.int32)
  for token_id, base_id in _special_target_to_base(target, base).items():
    special_base_ids[token_id] = base_id
  if key[0] == key[1]:  # the base itself: each token is its own spelling
    ids = np.full((vocab_size, max_length), pad_id, dtype=np.int32)
    ids[:, 0] = np.where(special_base_ids >= 0, special_base_ids, np.arange(vocab_size))
    result = SurfaceForms(ids, np.ones(vocab_size, dtype=np.int32), special_base_ids, 0, 0)
  else:
    encoder = encoder or SurfaceEncoder(base)
    pieces = [data if data else b" " for data in target.vocab_bytes]  # holes in the id space
    special_rows = np.flatnonzero(special_base_ids >= 0)
    for token_id in special_rows.tolist():
      pieces[token_id] = b" "  # placeholder: the row becomes the base special below
    ids, lengths, truncated = encoder.encode_bytes_packed(pieces, max_length, pad_id)
    ids[special_rows] = pad_id
    ids[special_rows, 0] = special_base_ids[special_rows]
    lengths[special_rows] = 1
    unknown_id = base.roles.get("unk")
    unknown = (
      0
      if unknown_id is None
      else int(
        np.any(
          (ids == unknown_id) & (special_base_ids < 0)[:, None] & (np.arange(max_length) < lengths[:, None]), axis=1
        ).sum()
      )
    )
    result = SurfaceForms(ids, lengths, special_base_ids, truncated, unknown)
  if len(_CACHE) >= _CACHE_ENTRIES:
    _CACHE.pop(next(iter(_CACHE)))
  _CACHE[key] = result
  return result
