"""`SampledBatch`: one training batch tokenized with a freshly sampled tokenizer (`zett.tokenization.sampler`).

Sampled vocabulary ids: [base specials (S)] [256 bytes] [pieces, in hash-key order].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from zett.tokenization import byte_level


@dataclasses.dataclass(frozen=True)
class SampledBatch:
  """One batch tokenized with a freshly sampled tokenizer, padded to static shapes.

  Rows of the embedded vocabulary ("rows") are the whole sampled vocabulary, or with
  `batch_vocab_size` the tokens used in the batch + sampled negatives; `input_ids` index rows.
  """

  input_ids: np.ndarray  # int32 [B, T] row ids (pad: row of the pad special, else 0)
  attention_mask: np.ndarray  # int32 [B, T]
  vocab_surface_ids: np.ndarray  # int32 [Vmax, L] base ids spelling each row
  vocab_surface_lengths: np.ndarray  # int32 [Vmax]; padded rows have length 1
  special_base_ids: np.ndarray  # int32 [Vmax]; base special a row copies, -1 otherwise
  vocab_mask: np.ndarray  # bool [Vmax]; False on padding rows (mask their logits)
  vocab_token_ids: np.ndarray  # int32 [Vmax]; sampled-vocabulary id of each row, -1 on padding
  token_bytes: np.ndarray  # int32 [Vmax]; bytes a row stands for (0: special / padding)
  base_token_ids: np.ndarray  # int32 [Vmax]; base id of rows that are exactly one base token, else -1
  vocab_size: int  # real rows
  sampled_vocab_size: int  # size of the whole sampled vocabulary
  step: int
  scores: np.ndarray  # float64 [sampled pieces] log-prob of each non-byte piece
  num_specials: int
  _fixed_pieces: tuple[str, ...]  # specials' content + the 256 byte pieces
  _piece_spellings: list[str]  # the surface cache's spellings (append-only) ...
  _piece_slots: np.ndarray  # ... and where this vocabulary's pieces are in it
  pretokenizer: str = "gpt2"  # the `PRETOKEN_PATTERNS` split the batch's text was pre-tokenized with

  @property
  def pieces(self) -> tuple[str, ...]:
    """Byte-level spelling of every sampled id (specials: their content). Built on demand."""
    spellings = self._piece_spellings
    return self._fixed_pieces + tuple(spellings[i] for i in self._piece_slots.tolist())

  def decode(self, row: int) -> bytes:
    """The bytes of sequence `row` (specials and padding dropped)."""
    ids = self.vocab_token_ids[self.input_ids[row][self.attention_mask[row] > 0]]
    pieces = self.pieces
    return byte_level.from_byte_level("".join(pieces[i] for i in ids.tolist() if i >= self.num_specials))

  def arrays(self) -> dict[str, np.ndarray]:
    """The static-shape arrays a jitted step takes."""
    return {
      name: getattr(self, name)
      for name in (
        "input_ids",
        "attention_mask",
        "vocab_surface_ids",
        "vocab_surface_lengths",
        "special_base_ids",
        "vocab_mask",
        "token_bytes",
        "base_token_ids",
      )
    }
