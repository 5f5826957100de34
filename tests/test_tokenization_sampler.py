"""The per-batch tokenizer sampler: determinism, bytes + specials, exact decoding, resumable state."""

from __future__ import annotations

from zett.assets import smollm2_gguf_path
import json

import numpy as np
import pytest

from zett.testing.multilingual_text import multilingual_lines, stdlib_lines
from zett.tokenization import TokenizerSampler, from_byte_level, load_tokenizer, to_byte_level

B, T = 16, 64


@pytest.fixture(scope="module")
def smollm2():
  return load_tokenizer(str(smollm2_gguf_path()))


def _batches(count: int, seed: int = 0) -> list[list[str]]:
  code = list(stdlib_lines(2000))
  text = list(multilingual_lines(2000, seed=seed))
  lines = [line for pair in zip(code, text) for line in pair]
  chunks = [" ".join(lines[i:i + 4]) for i in range(0, len(lines), 4)]
  return [chunks[i * B:(i + 1) * B] for i in range(count)]


def _sampler(base, **options):
  defaults = dict(vocab_size=2048, history_batches=4, sequence_length=T, seed=0)
  return TokenizerSampler(base, **{**defaults, **options})


def _assert_same(a, b):
  for name, value in a.arrays().items():
    np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)
  assert a.pieces == b.pieces


def test_deterministic_under_seed_and_different_across_seeds(smollm2):
  batches = _batches(6)
  first, second, other = _sampler(smollm2), _sampler(smollm2), _sampler(smollm2, seed=1)
  for texts in batches:
    a, b, c = first.sample(texts), second.sample(texts), other.sample(texts)
    _assert_same(a, b)
  assert set(a.pieces) != set(c.pieces)
  assert a.step == 5


def test_bytes_and_specials_always_present_and_sizes(smollm2):
  sampler = _sampler(smollm2, min_vocab_size=600)
  specials = sorted(smollm2.special_ids)
  sizes = set()
  for texts in _batches(5):
    batch = sampler.sample(texts)
    S = batch.num_specials
    assert S == len(specials)
    assert batch.pieces[S:S + 256] == tuple(to_byte_level(bytes([b])) for b in range(256))
    np.testing.assert_array_equal(batch.special_base_ids[:S], specials)
    assert (batch.special_base_ids[S:] == -1).all()
    assert 600 + S <= batch.sampled_vocab_size <= 2048 + S
    assert len(set(batch.pieces[S:])) == batch.sampled_vocab_size - S  # no duplicate pieces
    assert batch.vocab_surface_ids.shape == (2048 + S, 7)  # static: the largest vocabulary
    assert batch.vocab_mask.sum() == batch.vocab_size == batch.sampled_vocab_size
    scores = batch.scores
    assert np.isclose(np.exp(scores).sum(), 1.0) and len(scores) == batch.sampled_vocab_size - S - 256
    sizes.add(batch.sampled_vocab_size)
  assert len(sizes) > 1


def test_log_uniform_vocabulary_sizes_give_each_doubling_the_same_chance(smollm2):
  shares = {}
  for log_uniform in (True, False):
    sampler = _sampler(smollm2, vocab_size=1200, min_vocab_size=300, log_uniform_vocab_size=log_uniform)
    for texts in _batches(4):
      sampler.sample(texts)
    rng = np.random.default_rng(0)
    sizes = np.array([sampler._pick_pieces(rng)[2] for _ in range(400)])
    assert 300 <= sizes.min() and sizes.max() <= 1200 and sizes.max() > 1100  # the window has the pieces for 1200
    shares[log_uniform] = float((sizes < 600).mean())  # 300..600 is one of the two doublings
  assert 0.4 < shares[True] < 0.6, shares
  assert shares[False] < 0.45, shares  # uniform: (600 - 300) / 900 = 1/3


def test_tokenization_decodes_to_the_text_and_matches_a_standalone_unigram(smollm2):
  sampler = _sampler(smollm2, sequence_length=512)
  for texts in _batches(3):
    batch = sampler.sample(texts)
  assert batch.attention_mask.sum(1).max() < 512
  for row, text in enumerate(texts):
    assert batch.decode(row) == text.encode("utf-8")
  tokenizer = sampler.tokenizer_for(batch)
  ids = tokenizer.encode_batch(texts)
  for row, expected in enumerate(ids):
    got = batch.vocab_token_ids[batch.input_ids[row][batch.attention_mask[row] > 0]]
    assert list(got) == expected
  assert tokenizer.decode(ids[0]) == texts[0]
  # Pieces are real substrings: usually much shorter than bytes.
  assert batch.attention_mask.sum() < 0.5 * sum(len(t.encode()) for t in texts)


def test_cl100k_split_gives_pieces_gpt2_cannot_and_still_decodes_exactly(smollm2):
  texts = [f"def f{i}(self):\n    return self.get(x{i}) + 12345\n" for i in range(B)]
  pieces = {}
  for split in ("gpt2", "cl100k"):
    sampler = _sampler(smollm2, sequence_length=512, pretokenizers=(split,), history_batches=1, min_count=1)
    batch = sampler.sample(texts)
    assert batch.pretokenizer == split
    for row, text in enumerate(texts):
      assert batch.decode(row) == text.encode("utf-8")
    ids = sampler.tokenizer_for(batch).encode_batch(texts)  # the standalone tokenizer splits the same way
    assert [list(batch.vocab_token_ids[batch.input_ids[r][batch.attention_mask[r] > 0]]) for r in range(B)] == ids
    pieces[split] = {from_byte_level(p).decode("utf-8", "replace") for p in batch.pieces[batch.num_specials + 256 :]}
  # cl100k lets one punctuation character lead a word and keeps newlines after punctuation; GPT-2 never does.
  assert {"(self", ".get", "):\n"} <= pieces["cl100k"]
  assert not {"(self", ".get", "):\n"} & pieces["gpt2"]
  assert "12345" not in pieces["cl100k"] and "123" in pieces["cl100k"]  # digits in runs of at most three


def test_several_splits_are_drawn_per_batch_and_resume_exactly(smollm2):
  batches = _batches(8)
  original = _sampler(smollm2, pretokenizers=("gpt2", "cl100k"))
  drawn = [original.sample(texts).pretokenizer for texts in batches[:6]]
  assert set(drawn) == {"gpt2", "cl100k"}
  state = json.loads(json.dumps(original.get_state()))
  assert state["window_splits"] == drawn[-4:]
  resumed = _sampler(smollm2, pretokenizers=("gpt2", "cl100k"))
  resumed.set_state(state)
  for texts in batches[6:]:
    _assert_same(original.sample(texts), resumed.sample(texts))
  # One split samples exactly what it did before splits could be chosen (a version-1 state is all GPT-2).
  single = _sampler(smollm2)
  for texts in batches[:4]:
    single.sample(texts)
  old = {k: v for k, v in single.get_state().items() if k != "window_splits"} | {"version": 1}
  again = _sampler(smollm2)
  again.set_state(old)
  _assert_same(single.sample(batches[4]), again.sample(batches[4]))
  with pytest.raises(ValueError, match="pretokenizers"):
    _sampler(smollm2, pretokenizers=("gpt3",))


def test_truncation_and_bos_eos(smollm2):
  sampler = _sampler(smollm2, sequence_length=16, prepend_bos=True, append_eos=True)
  batch = sampler.sample(_batches(1)[0])
  S = batch.num_specials
  rows = batch.vocab_token_ids[batch.input_ids]
  assert (batch.attention_mask.sum(1) == 16).all()
  assert (batch.special_base_ids[batch.input_ids[:, 0]] == smollm2.roles["bos"]).all()
  assert (batch.special_base_ids[batch.input_ids[:, -1]] == smollm2.roles["eos"]).all()
  assert (rows[:, 1:-1] >= S).all()
  text = batch.decode(0)
  assert _batches(1)[0][0].encode().startswith(text) and len(text) > 14


def test_surface_forms_spell_each_piece(smollm2):
  batch = _sampler(smollm2).sample(_batches(1)[0])
  S = batch.num_specials
  for row in range(S, batch.vocab_size):
    piece = batch.pieces[batch.vocab_token_ids[row]]
    length = batch.vocab_surface_lengths[row]
    spelled = b"".join(smollm2.vocab_bytes[i] for i in batch.vocab_surface_ids[row, :length])
    data = from_byte_level(piece)
    if length < 7 and smollm2.roles["unk"] not in batch.vocab_surface_ids[row, :length]:
      assert spelled == data
    assert batch.token_bytes[row] == len(data)
  base_ids = batch.base_token_ids
  single = base_ids >= 0
  assert single.sum() > 0.2 * batch.vocab_size
  for row in np.flatnonzero(single)[:500]:
    assert smollm2.vocab_bytes[base_ids[row]] == from_byte_level(batch.pieces[batch.vocab_token_ids[row]])


def test_batch_vocabulary_keeps_used_tokens_plus_negatives(smollm2):
  texts = _batches(1)[0]
  full = _sampler(smollm2).sample(texts)
  small = _sampler(smollm2, batch_vocab_size=1200).sample(texts)
  assert small.input_ids.shape == full.input_ids.shape and small.vocab_surface_ids.shape[0] == 1200
  assert small.vocab_size == 1200 and small.vocab_mask.all()
  # Same tokens (through the row remapping), same spellings.
  np.testing.assert_array_equal(small.vocab_token_ids[small.input_ids] * small.attention_mask,
                                full.vocab_token_ids[full.input_ids] * full.attention_mask)
  rows = small.vocab_token_ids
  np.testing.assert_array_equal(small.vocab_surface_ids, full.vocab_surface_ids[rows])
  np.testing.assert_array_equal(small.special_base_ids, full.special_base_ids[rows])
  assert set(range(small.num_specials)) <= set(rows.tolist())
  used = np.unique(small.input_ids[small.attention_mask > 0])
  assert 0 < used.size < 1200  # the rest are negatives
  with pytest.raises(ValueError, match="batch_vocab_size"):
    _sampler(smollm2, batch_vocab_size=100).sample(texts)


def test_state_round_trip_resumes_exactly(smollm2):
  batches = _batches(7)
  original = _sampler(smollm2)
  for texts in batches[:5]:
    original.sample(texts)
  state = json.loads(json.dumps(original.get_state()))
  resumed = _sampler(smollm2)
  resumed.set_state(state)
  for texts in batches[5:]:
    _assert_same(original.sample(texts), resumed.sample(texts))
  fixed = original.sample_fixed(3).encode_batch(batches[0])
  assert fixed == resumed.sample_fixed(3).encode_batch(batches[0])
  with pytest.raises(ValueError, match="version"):
    resumed.set_state({"version": 99})


def test_bad_arguments(smollm2):
  with pytest.raises(ValueError, match="256 byte pieces"):
    _sampler(smollm2, vocab_size=100)
  with pytest.raises(ValueError, match="at least one text"):
    _sampler(smollm2).sample([])
