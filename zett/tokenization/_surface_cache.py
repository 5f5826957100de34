"""The sampler's cache of piece spellings and their surface forms in base subtokens (`SurfaceCache`)."""

from __future__ import annotations

import numpy as np

from zett.tokenization.surface import SurfaceEncoder, pack_flat


class SurfaceCache:
  """Spelling and surface form of every piece the window's keys point at (`SubstringWindow.slots`).

  Windows share most pieces from step to step, so a piece is spelled in base subtokens once while
  its key stays in the window. Surface forms are computed on first use only, so a restricted batch
  vocabulary pays for the rows it embeds, not for the whole sampled vocabulary.
  """

  def __init__(self, encoder: SurfaceEncoder, max_length: int, pad_id: int, speller=None, max_entries: int = 1_000_000):
    self.encoder, self.max_length, self.pad_id, self.max_entries = encoder, max_length, pad_id, max_entries
    self.speller = speller  # compiled BPE (`_fast_bpe.BpeSpeller`), or None: the encoder's Rust model
    self.clear()

  def clear(self) -> None:
    self.ids = np.zeros((1024, self.max_length), dtype=np.int32)
    self.lengths = np.zeros(1024, dtype=np.int32)  # 0 = not spelled in base subtokens yet
    self.spellings: list[str] = []  # a new list: batches keep pointing at the old one

  def add(self, spellings: list[str]) -> np.ndarray:
    """Slots for new pieces (the caller checked `full` first)."""
    first = len(self.spellings)
    self.spellings += spellings
    if len(self.spellings) > self.lengths.size:  # grow by doubling: amortised O(1) per piece
      capacity = max(2 * self.lengths.size, len(self.spellings))
      self.ids = np.resize(self.ids, (capacity, self.max_length))
      self.lengths = np.concatenate([self.lengths, np.zeros(capacity - self.lengths.size, np.int32)])
    return np.arange(first, len(self.spellings))

  def full(self, adding: int) -> bool:
    return len(self.spellings) + adding > self.max_entries

  def surfaces(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, L], lengths [N]) of `slots`, spelling the ones not spelled yet."""
    todo = np.unique(slots[self.lengths[slots] == 0])
    if todo.size:
      spellings = [self.spellings[i] for i in todo.tolist()]
      if self.speller is not None:
        flat, full_lengths = self.speller.spell(spellings)
        ids, lengths, _ = pack_flat(flat, full_lengths, self.max_length, self.pad_id)
      else:
        ids, lengths, _ = self.encoder.encode_byte_level_packed(spellings, self.max_length, self.pad_id)
      self.ids[todo], self.lengths[todo] = ids, lengths
    return self.ids[slots], self.lengths[slots]
