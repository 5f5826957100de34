"""Surface forms: target tokens spelled in base subtokens, exact bytes, base tokens as themselves."""

from __future__ import annotations

from zett.assets import qwen_tiktoken_path, smollm2_gguf_path
import os

import numpy as np
import pytest
import tokenizers

from zett.tokenization import SurfaceEncoder, load_tokenizer, surface_forms, to_byte_level
from zett.tokenization.surface import pack_rows


@pytest.fixture(scope="module")
def smollm2():
  return load_tokenizer(str(smollm2_gguf_path()))


@pytest.fixture(scope="module")
def qwen():
  return load_tokenizer(str(qwen_tiktoken_path()))


@pytest.fixture(scope="module")
def mistral():
  import mistral_common
  return load_tokenizer(os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1"))


def _spelled_bytes(forms, base, row):
  return b"".join(base.vocab_bytes[i] for i in forms.ids[row, :forms.lengths[row]])


def test_base_spelled_by_itself_is_the_identity(smollm2):
  forms = surface_forms(smollm2, smollm2)
  assert forms.ids.shape == (smollm2.vocab_size, 7) and forms.ids.dtype == np.int32
  np.testing.assert_array_equal(forms.ids[:, 0], np.arange(smollm2.vocab_size))
  assert (forms.lengths == 1).all() and (forms.ids[:, 1:] == 0).all()
  specials = sorted(smollm2.special_ids)
  np.testing.assert_array_equal(forms.special_base_ids[specials], specials)
  assert (forms.special_base_ids[~smollm2.is_special] == -1).all()


def test_qwen_under_smollm2_spells_exact_bytes(qwen, smollm2):
  forms = surface_forms(qwen, smollm2)
  assert forms.ids.shape == (qwen.vocab_size, 7)
  ordinary = np.flatnonzero(~qwen.is_special)
  # Independent reference: the base model alone, one string at a time.
  model_only = tokenizers.Tokenizer(smollm2.backend.model)
  reference = [e.ids for e in model_only.encode_batch([to_byte_level(qwen.vocab_bytes[i]) for i in ordinary],
                                                      add_special_tokens=False)]
  # SmolLM2 has no token for some bytes (0xC0, 0xF5, ...): the model drops them, we write its unk and count.
  lacking = bytes(b for b in range(256) if bytes([b]) not in smollm2.vocab_bytes)
  present = bytes(sorted(set(range(256)) - set(lacking)))
  gaps = np.array([bool(qwen.vocab_bytes[i].translate(None, present)) for i in ordinary])
  assert forms.num_unknown == gaps.sum() > 0
  assert (forms.ids[ordinary[gaps]] == smollm2.roles["unk"]).any(axis=1).all()
  reference_ids, reference_lengths, _ = pack_rows(reference, 7)
  clean = ordinary[~gaps]
  np.testing.assert_array_equal(forms.ids[clean], reference_ids[~gaps])
  np.testing.assert_array_equal(forms.lengths[clean], reference_lengths[~gaps])
  full_lengths = np.array([len(r) for r in reference])
  as_text = np.flatnonzero(qwen.is_special & (forms.special_base_ids < 0))  # <|extra_N|> spelled as text
  as_text_lengths = np.array([len(r) for r in SurfaceEncoder(smollm2).encode_ids(
      [qwen.vocab_bytes[i] for i in as_text])])
  assert len(as_text) == 205
  assert forms.num_truncated == int((full_lengths[~gaps] > 7).sum() + (as_text_lengths > 7).sum())
  for row in clean[::7]:  # the spelling is exact: base bytes concatenate to the token's bytes
    if forms.lengths[row] < 7:
      assert _spelled_bytes(forms, smollm2, row) == qwen.vocab_bytes[row]
  # Tokens that exist in the base vocabulary are a single row of their own base id.
  base_ids = {data: i for i, data in enumerate(smollm2.vocab_bytes) if not smollm2.is_special[i]}
  shared = [row for row in ordinary if qwen.vocab_bytes[row] in base_ids]
  assert len(shared) > 10_000
  np.testing.assert_array_equal(forms.lengths[shared], 1)
  np.testing.assert_array_equal(forms.ids[shared, 0], [base_ids[qwen.vocab_bytes[row]] for row in shared])
  # Specials: same content first, then role; specials without a counterpart are spelled as text.
  assert forms.special_base_ids[qwen.special_tokens["<|endoftext|>"]] == 0
  assert forms.special_base_ids[qwen.special_tokens["<|im_start|>"]] == 1
  extra = qwen.special_tokens["<|extra_0|>"]
  assert forms.special_base_ids[extra] == -1 and _spelled_bytes(forms, smollm2, extra) == b"<|extra_0|>"


def test_tokens_crossing_base_pretoken_boundaries_still_decompose(smollm2):
  # SmolLM2's pre-tokenizer would cut these apart; spelling uses the model alone.
  pieces = [b"ing the", b".\n\n    return", b" 2024", "ünïcödé 你好".encode()]
  rows = SurfaceEncoder(smollm2).encode_ids(pieces)
  for piece, row in zip(pieces, rows):
    assert b"".join(smollm2.vocab_bytes[i] for i in row) == piece
  assert len(rows[0]) < len(pieces[0])  # real merges happened, not a byte-by-byte spelling


def test_sentencepiece_base_spells_partial_characters_with_byte_fallback(qwen, mistral):
  forms = surface_forms(qwen, mistral, max_length=16)
  ordinary = np.flatnonzero(~qwen.is_special)
  partial = [row for row in ordinary[:40_000] if _is_invalid_utf8(qwen.vocab_bytes[row])]
  assert len(partial) > 100 and forms.num_unknown == 0
  for row in list(ordinary[:20_000]) + partial:
    if forms.lengths[row] < 16:
      assert _spelled_bytes(forms, mistral, row) == qwen.vocab_bytes[row], qwen.vocab_bytes[row]
  # Role mapping across families: Mistral's <s>/</s> become SmolLM2's bos/eos.
  assert forms.special_base_ids[qwen.special_tokens["<|endoftext|>"]] == mistral.roles["eos"]


def test_truncation_is_counted_and_padded(qwen, smollm2):
  forms = surface_forms(qwen, smollm2, max_length=2, pad_id=-7)
  assert forms.lengths.max() == 2 and forms.num_truncated > forms.ids.shape[0] // 10
  padded = np.arange(2)[None, :] >= forms.lengths[:, None]
  assert (forms.ids[padded] == -7).all() and (forms.ids[~padded] >= 0).all()
  assert forms.mask.sum() == forms.lengths.sum()


def _is_invalid_utf8(data: bytes) -> bool:
  try:
    data.decode("utf-8")
    return False
  except UnicodeDecodeError:
    return True
