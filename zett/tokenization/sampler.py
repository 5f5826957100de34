"""ZeTT-style per-batch tokenizer sampling: a fresh UnigramLM tokenizer for every training batch.

Each batch's text joins a window of the last K batches. The sampled tokenizer's pieces are the
window's substrings (never crossing a pre-token boundary) with the highest noisy frequency,
score = log(count) + noise_std * N(0, 1) (log-normal noise on the frequency), normalised to log
probabilities. All 256 byte pieces and the base's special tokens are always present, so any text
tokenizes. Everything random comes from (seed, step), so a resumed run samples the same tokenizers.

Sampled vocabulary ids: [base specials (S)] [256 bytes] [pieces, in hash-key order].

This module owns the window and the sampling; the batch it returns is `sampled_batch.SampledBatch`, pieces are
spelled in base subtokens by `_surface_cache`, and `_sampled_unigram` turns a sampled vocabulary into a `Tokenizer`.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np

from zett.errors import ZettError
from zett.tokenization import _fast, _fast_bpe, _fast_pretokenize
from zett.tokenization._sampled_unigram import BYTE_PIECES, byte_score, unigram_tokenizer
from zett.tokenization._substrings import (
  PRETOKEN_PATTERNS,
  BatchSubstrings,
  BatchWords,
  SubstringWindow,
  count_substrings,
  hash_words,
  pretokenize,
  segment,
)
from zett.tokenization._surface_cache import SurfaceCache
from zett.tokenization.byte_level import to_byte_level
from zett.tokenization.sampled_batch import SampledBatch
from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH, SurfaceEncoder, pack_rows
from zett.tokenization.tokenizer import Tokenizer


class SamplerError(ZettError, ValueError):
  """Sampler settings that cannot work (for this base, or for the text of a batch); names the setting."""


class TokenizerSampler:
  """Samples a UnigramLM tokenizer per batch from the text of the last `history_batches` batches.

  Args:
    base: the base model's tokenizer (surface forms, special tokens).
    vocab_size: pieces per sampled tokenizer including the 256 bytes (specials come on top).
    min_vocab_size: if set, each step draws the size uniformly from [min_vocab_size, vocab_size].
    log_uniform_vocab_size: with `min_vocab_size`, draw the size log-uniformly instead (each doubling equally
      likely), so that 8k and 150k vocabularies both come up often.
    noise_std: sigma of the log-normal noise on substring frequencies.
    history_batches: K, the window of batches whose substrings are counted.
    max_piece_bytes: longest piece considered.
    min_count: substrings seen fewer times in the window are not candidates.
    sequence_length: T of `input_ids`; longer texts are truncated.
    surface_max_length: L of the surface forms.
    batch_vocab_size: 0 = embed the whole sampled vocabulary (Vmax = max_vocab_size); else the
      static number of rows: specials + the batch's tokens + uniformly sampled negatives.
    prepend_bos / append_eos: add the base's bos / eos special to every sequence.
    compiled: use the numba kernels (`_fast`); None = when numba is installed. Both paths give
      the same batches; the numpy path is the reference and the fallback.
    pretokenizers: the pre-token splits to draw from (`PRETOKEN_PATTERNS` names), one per batch, uniformly from
      (seed, step); the first one also splits `sample_fixed` tokenizers. More than one teaches the hypernetwork the
      pieces of tokenizers that split text differently from the base.
  """

  def __init__(
    self,
    base: Tokenizer,
    vocab_size: int = 32768,
    noise_std: float = 1.0,
    history_batches: int = 16,
    seed: int = 0,
    min_vocab_size: int | None = None,
    max_piece_bytes: int = 16,
    min_count: int = 2,
    sequence_length: int = 128,
    surface_max_length: int = DEFAULT_SURFACE_LENGTH,
    batch_vocab_size: int = 0,
    prepend_bos: bool = False,
    append_eos: bool = False,
    compiled: bool | None = None,
    pretokenizers: Sequence[str] = ("gpt2",),
    log_uniform_vocab_size: bool = False,
  ):
    if vocab_size < 257:
      raise SamplerError(f"vocab_size must exceed the 256 byte pieces, got {vocab_size}")
    if min_vocab_size is not None and not 257 <= min_vocab_size <= vocab_size:
      raise SamplerError(f"min_vocab_size must be in [257, vocab_size={vocab_size}], got {min_vocab_size}")
    if history_batches < 1 or max_piece_bytes < 2 or sequence_length < 1 or noise_std < 0:
      raise SamplerError("history_batches >= 1, max_piece_bytes >= 2, sequence_length >= 1 and noise_std >= 0 needed")
    if compiled and not _fast.AVAILABLE:
      raise SamplerError("compiled=True needs numba (pip install numba)")
    unknown = [name for name in pretokenizers if name not in PRETOKEN_PATTERNS]
    if unknown or not pretokenizers:
      raise SamplerError(f"pretokenizers must be a non-empty list of {sorted(PRETOKEN_PATTERNS)}, got {pretokenizers}")
    self.pretokenizers = tuple(pretokenizers)
    self.compiled = _fast.AVAILABLE if compiled is None else compiled
    self.base = base
    self.vocab_size, self.min_vocab_size, self.noise_std = vocab_size, min_vocab_size, noise_std
    self.log_uniform_vocab_size = log_uniform_vocab_size
    self.history_batches, self.seed, self.max_piece_bytes = history_batches, seed, max_piece_bytes
    self.min_count, self.sequence_length, self.surface_max_length = min_count, sequence_length, surface_max_length
    self.special_base_ids = np.array(sorted(base.special_ids), dtype=np.int32)
    self.num_specials = len(self.special_base_ids)
    self.batch_vocab_size = batch_vocab_size
    if batch_vocab_size and batch_vocab_size <= self.num_specials:
      raise SamplerError(f"batch_vocab_size {batch_vocab_size} leaves no room beyond the {self.num_specials} specials")
    special_row = {int(b): i for i, b in enumerate(self.special_base_ids)}
    self._bos = special_row.get(base.roles.get("bos", -1)) if prepend_bos else None
    self._eos = special_row.get(base.roles.get("eos", -1)) if append_eos else None
    if (prepend_bos and self._bos is None) or (append_eos and self._eos is None):
      raise SamplerError(f"{base.name} has no bos/eos special token to add")
    self._pad = special_row.get(base.roles.get("pad", -1), 0)
    encoder = SurfaceEncoder(base)
    self._base_unk = base.roles.get("unk", -1)
    pad_id = base.roles.get("pad", 0)
    speller = _fast_bpe.BpeSpeller.create(encoder) if self.compiled else None
    self._surface = SurfaceCache(encoder, surface_max_length, pad_id, speller)
    special_rows = [[int(b)] for b in self.special_base_ids]
    byte_rows = encoder.encode_ids([bytes([b]) for b in range(256)])
    self._fixed_ids, self._fixed_lengths, _ = pack_rows(special_rows + byte_rows, surface_max_length, pad_id)
    self._special_pieces = tuple(base.id_to_piece[int(b)] or "" for b in self.special_base_ids)
    self._window = SubstringWindow(history_batches, _fast.merge_window if self.compiled else None)
    self._window_texts: collections.deque[list[str]] = collections.deque(maxlen=history_batches)
    self._window_splits: collections.deque[str] = collections.deque(maxlen=history_batches)
    self._batches_seen = 0

  @property
  def max_vocab_size(self) -> int:
    """Largest sampled vocabulary: specials + `vocab_size`."""
    return self.num_specials + self.vocab_size

  @property
  def rows(self) -> int:
    """Static number of embedded-vocabulary rows (Vmax)."""
    return self.batch_vocab_size or self.max_vocab_size

  # -- window ------------------------------------------------------------------------------------

  def _observe(self, texts: Sequence[str], pretokenizer: str) -> tuple[BatchWords, np.ndarray, np.ndarray]:
    """Adds a batch, pre-tokenized with `PRETOKEN_PATTERNS[pretokenizer]`, to the window.

    Returns its distinct words, and each text's word indices as CSR (flat word ids, offsets [B + 1]).
    """
    words = _fast_pretokenize.pretokenize(texts, pretokenizer) if self.compiled else None
    if words is None:
      codes, word_lengths, counts, word_ids, token_ends = pretokenize(texts, pretokenizer)
    else:
      codes, word_lengths, counts, word_ids, token_ends = words
    text_offsets = np.concatenate([[0], token_ends])
    joined = codes.tobytes()
    word_starts = np.cumsum(word_lengths) - word_lengths
    if self.compiled:
      keys, key_counts, firsts, lengths, starts, sub_lengths, sub_unique = _fast.hash_count(
        codes, word_starts, word_lengths, counts, self.max_piece_bytes
      )
      hashed = BatchWords(
        codes,
        joined,
        word_starts,
        word_lengths,
        self.max_piece_bytes,
        None,
        None,
        starts,
        sub_lengths,
        sub_unique,
        keys,
      )
      substrings = BatchSubstrings(keys, key_counts, firsts, lengths, to_byte_level(joined))
    else:
      hashed = hash_words(codes, word_starts, word_lengths, self.max_piece_bytes)
      substrings = count_substrings(hashed, counts)
    self._window.add(substrings)
    self._window_texts.append(list(texts))
    self._window_splits.append(pretokenizer)
    self._batches_seen += 1
    return hashed, word_ids, text_offsets

  # -- sampling ----------------------------------------------------------------------------------

  def _pick_pieces(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """(window positions of the chosen pieces, their log-prob scores, sampled vocabulary size)."""
    if self.min_vocab_size is None:
      size = self.vocab_size
    elif self.log_uniform_vocab_size:
      size = int(np.exp(rng.uniform(np.log(self.min_vocab_size), np.log(self.vocab_size))))
    else:
      size = int(rng.integers(self.min_vocab_size, self.vocab_size + 1))
    window = self._window
    candidates = np.flatnonzero(window.counts >= self.min_count)
    noisy = np.log(window.counts[candidates].astype(np.float64))
    noisy += rng.standard_normal(candidates.size) * self.noise_std
    wanted = min(size - 256, candidates.size)
    if wanted < candidates.size:
      top = np.argpartition(-noisy, wanted - 1)[:wanted] if wanted > 0 else np.zeros(0, dtype=np.int64)
    else:
      top = np.arange(candidates.size)
    top.sort()  # ascending window positions = ascending keys: every later lookup walks forward
    scores = noisy[top]
    if scores.size:
      peak = scores.max()
      scores -= peak + np.log(np.exp(scores - peak).sum())
    return candidates[top], scores, 256 + wanted

  def _slots(self, positions: np.ndarray) -> np.ndarray:
    """Surface-cache slots of the chosen window positions (new pieces get a slot now)."""
    window, cache = self._window, self._surface
    missing = np.flatnonzero(window.slots[positions] < 0)
    if missing.size:
      if cache.full(missing.size):
        cache.clear()
        window.slots[:] = -1
        missing = np.arange(positions.size)
      window.slots[positions[missing]] = cache.add(window.spellings(positions[missing]))
    return window.slots[positions]

  def _standalone(self, spellings: Sequence[str], scores: np.ndarray, name: str, pretokenizer: str) -> Tokenizer:
    """A standalone zett Tokenizer for a sampled vocabulary (`_sampled_unigram.unigram_tokenizer`)."""
    return unigram_tokenizer(
      self._special_pieces, self.special_base_ids, self.base.roles, spellings, scores, name, pretokenizer
    )

  def tokenizer_for(self, batch: SampledBatch) -> Tokenizer:
    """The tokenizer `batch` was tokenized with, as a standalone `Tokenizer` (for eval and export)."""
    spellings = [batch._piece_spellings[i] for i in batch._piece_slots.tolist()]
    return self._standalone(spellings, batch.scores, f"sampled@{batch.step}", batch.pretokenizer)

  def sample_fixed(self, seed: int) -> Tokenizer:
    """A tokenizer drawn from the current window with its own seed, leaving the sampler unchanged."""
    if not self._window.batches:
      raise ValueError("the sampler has seen no text yet")
    rng = np.random.default_rng([self.seed, 1 << 40, seed])
    positions, scores, _ = self._pick_pieces(rng)
    spellings = self._surface.spellings
    spellings = [spellings[i] for i in self._slots(positions).tolist()]
    return self._standalone(spellings, scores, f"sampled-fixed@{seed}", self.pretokenizers[0])

  def _encode_words(
    self, words: BatchWords, positions: np.ndarray, scores: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """CSR token lists of the batch's distinct words: (sampled ids, offsets [W + 1])."""
    piece_keys = self._window.keys[positions]  # sorted: positions ascend
    piece_ids = self.num_specials + 256 + np.arange(positions.size)
    byte_ids = self.num_specials + np.arange(256)
    viterbi = _fast.segment if self.compiled else segment
    return viterbi(words, piece_keys, piece_ids, scores, byte_ids, byte_score(scores))

  def _sequences(
    self, ids: np.ndarray, starts: np.ndarray, word_ids: np.ndarray, text_offsets: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of every text, truncated and with bos/eos: (flat ids, text of each, column of each)."""
    body = self.sequence_length - (self._bos is not None) - (self._eos is not None)
    lengths = starts[word_ids + 1] - starts[word_ids]  # tokens per word occurrence
    position = np.cumsum(lengths) - lengths  # first token of each occurrence in the batch's stream
    token_of = np.repeat(starts[word_ids] - position, lengths) + np.arange(int(lengths.sum()))
    first = np.concatenate([[0], np.cumsum(lengths)])[text_offsets]  # stream position of each text
    text_of = np.repeat(np.arange(text_offsets.size - 1), np.diff(first))
    columns = np.arange(token_of.size) - first[text_of]
    keep = columns < body
    tokens, text_of, columns = ids[token_of[keep]], text_of[keep], columns[keep]
    counts = np.minimum(np.diff(first), body)
    if self._bos is not None:
      texts = np.arange(counts.size)
      tokens = np.concatenate([np.full(counts.size, self._bos), tokens])
      text_of, columns = np.concatenate([texts, text_of]), np.concatenate([np.full(counts.size, -1), columns]) + 1
    if self._eos is not None:
      shift = int(self._bos is not None)
      tokens = np.concatenate([tokens, np.full(counts.size, self._eos)])
      text_of = np.concatenate([text_of, np.arange(counts.size)])
      columns = np.concatenate([columns, counts + shift])
    return tokens, text_of, columns

  def sample(self, texts: Sequence[str], step: int | None = None) -> SampledBatch:
    """Adds `texts` to the window, samples a tokenizer from it and tokenizes `texts` with it.

    `step` (default: the number of batches seen before this one) seeds the randomness.
    """
    if not texts:
      raise ValueError("sample() needs at least one text")
    step = self._batches_seen if step is None else step
    pretokenizer = self.pretokenizers[0]
    if len(self.pretokenizers) > 1:  # its own stream: a single split samples exactly what it always did
      choice = np.random.default_rng([self.seed, step, 2]).integers(len(self.pretokenizers))
      pretokenizer = self.pretokenizers[int(choice)]
    words, word_ids, text_offsets = self._observe(texts, pretokenizer)
    rng = np.random.default_rng([self.seed, step])
    positions, scores, _ = self._pick_pieces(rng)
    slots = self._slots(positions)
    ids, starts = self._encode_words(words, positions, scores)
    tokens, text_of, columns = self._sequences(ids, starts, word_ids, text_offsets)
    sampled_total = self.num_specials + 256 + slots.size
    if self.batch_vocab_size:
      used = np.unique(np.concatenate([tokens, np.arange(self.num_specials)]))
      if used.size > self.batch_vocab_size:
        raise SamplerError(
          f"the batch uses {used.size} distinct tokens but batch_vocab_size is "
          f"{self.batch_vocab_size}; raise batch_vocab_size (>= batch tokens + specials)"
        )
      unused = np.ones(sampled_total, dtype=bool)
      unused[used] = False
      free = np.flatnonzero(unused)
      extra = min(self.batch_vocab_size - used.size, free.size)
      negatives = rng.choice(free, size=extra, replace=False) if extra else np.zeros(0, dtype=np.int64)
      token_ids = np.sort(np.concatenate([used, negatives]))
    else:
      token_ids = np.arange(sampled_total)
    num_rows, rows = token_ids.size, self.rows
    row_of = np.full(sampled_total, -1, dtype=np.int64)
    row_of[token_ids] = np.arange(num_rows)
    lengths = np.bincount(text_of, minlength=len(texts))
    input_ids = np.full((len(texts), self.sequence_length), self._pad, dtype=np.int32)
    input_ids[text_of, columns] = row_of[tokens]
    attention_mask = (np.arange(self.sequence_length)[None, :] < lengths[:, None]).astype(np.int32)

    def padded(values: np.ndarray, fill) -> np.ndarray:
      out = np.full((rows,) + values.shape[1:], fill, dtype=values.dtype)
      out[:num_rows] = values if self.batch_vocab_size == 0 else values[token_ids]
      return out

    num_fixed = self.num_specials + 256
    if self.batch_vocab_size == 0:
      piece_ids, piece_lengths = self._surface.surfaces(slots)
      surface_ids = padded(np.concatenate([self._fixed_ids, piece_ids]), 0)
      surface_lengths = padded(np.concatenate([self._fixed_lengths, piece_lengths]), 1)
    else:  # rows are the chosen tokens: fixed rows from the table, pieces spelled on demand
      fixed = token_ids < num_fixed
      surface_ids = np.zeros((rows, self.surface_max_length), dtype=np.int32)
      surface_lengths = np.ones(rows, dtype=np.int32)
      surface_ids[:num_rows][fixed] = self._fixed_ids[token_ids[fixed]]
      surface_lengths[:num_rows][fixed] = self._fixed_lengths[token_ids[fixed]]
      piece_ids, piece_lengths = self._surface.surfaces(slots[token_ids[~fixed] - num_fixed])
      surface_ids[:num_rows][~fixed], surface_lengths[:num_rows][~fixed] = piece_ids, piece_lengths
    special_base_ids = padded(
      np.concatenate([self.special_base_ids, np.full(sampled_total - self.num_specials, -1, np.int32)]), -1
    )
    token_bytes = padded(
      np.concatenate(
        [
          np.zeros(self.num_specials, np.int32),
          np.ones(256, np.int32),
          self._window.lengths(positions).astype(np.int32),
        ]
      ),
      0,
    )
    vocab_token_ids = np.full(rows, -1, dtype=np.int32)
    vocab_token_ids[:num_rows] = token_ids
    vocab_mask = vocab_token_ids >= 0
    # A one-subtoken spelling is the base token itself, unless it is the unk stand-in for a byte
    # the base cannot spell (the unk token is special, so it never matches a piece exactly).
    single = (surface_lengths == 1) & (special_base_ids < 0) & vocab_mask & (surface_ids[:, 0] != self._base_unk)
    base_token_ids = np.where(single, surface_ids[:, 0], -1).astype(np.int32)
    return SampledBatch(
      input_ids,
      attention_mask,
      surface_ids,
      surface_lengths,
      special_base_ids,
      vocab_mask,
      vocab_token_ids,
      token_bytes,
      base_token_ids,
      int(num_rows),
      int(sampled_total),
      step,
      scores,
      self.num_specials,
      self._special_pieces + BYTE_PIECES,
      self._surface.spellings,
      slots,
      pretokenizer,
    )

  # -- state -------------------------------------------------------------------------------------

  def get_state(self) -> dict[str, Any]:
    """JSON-able state: the window's texts, their pre-token splits and the batch counter (the surface cache is
    rebuilt)."""
    return {
      "version": 2,
      "batches_seen": self._batches_seen,
      "window_texts": [list(t) for t in self._window_texts],
      "window_splits": list(self._window_splits),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores `get_state`'s window (version 1, from before the splits were recorded, was all GPT-2)."""
    version = state.get("version")
    if version not in (1, 2):
      raise ValueError(f"unknown sampler state version {version!r}")
    texts_list = state["window_texts"]
    splits = state["window_splits"] if version == 2 else ["gpt2"] * len(texts_list)
    self._window = SubstringWindow(self.history_batches, self._window.merge)
    self._window_texts.clear()
    self._window_splits.clear()
    for texts, split in zip(texts_list, splits):
      self._observe(texts, split)
    self._batches_seen = int(state["batches_seen"])
