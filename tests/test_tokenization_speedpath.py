"""The sampler's compiled (numba) path gives exactly what its numpy reference path gives.

Each kernel (`zett.tokenization._fast*`) is checked against the code it replaces: the regex
pre-tokenizer, substring hashing/counting, the window merge, the Unigram Viterbi and the
`tokenizers` BPE model that spells new pieces; then whole sampled batches are compared.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zett.testing.multilingual_text import multilingual_lines, stdlib_lines
from zett.assets import qwen_tiktoken_path, smollm2_gguf_path
from zett.tokenization import TokenizerSampler, _fast, _fast_bpe, _fast_pretokenize, load_tokenizer, to_byte_level
from zett.tokenization.byte_level import from_byte_level
from zett.tokenization._substrings import SubstringWindow, count_substrings, hash_words, pretokenize, segment
from zett.tokenization.surface import SurfaceEncoder, pack_flat

needs_numba = pytest.mark.skipif(not _fast.AVAILABLE, reason="numba is not installed")

B, T = 16, 64


@pytest.fixture(scope="module")
def smollm2():
  return load_tokenizer(str(smollm2_gguf_path()))


def _batches(count: int) -> list[list[str]]:
  lines = [line for pair in zip(stdlib_lines(2000), multilingual_lines(2000)) for line in pair]
  chunks = [" ".join(lines[i:i + 4]) for i in range(0, len(lines), 4)]
  return [chunks[i * B:(i + 1) * B] for i in range(count)]


def _assert_same(a, b):
  for name, value in a.arrays().items():
    np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)
  np.testing.assert_array_equal(a.vocab_token_ids, b.vocab_token_ids)
  np.testing.assert_array_equal(a.scores, b.scores)
  assert a.pieces == b.pieces


def _words(texts: list[str], max_length: int = 16):
  codes, lengths, counts, _, _ = pretokenize(texts)
  return codes, np.cumsum(lengths) - lengths, lengths, counts


_ODD = list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u3000\u2028\u2009'\"sStTrRevmld0٣½.,;-_(aéЖあ漢😀\u0301\u200b\ufeff")
_ODD += ["'s", "'ll", "'re", "'ve", " 's", "  ", "\n\n", " 1", " .", "'S", "ſ", "12345", "(self", "):\n", "\r\n"]


def _random_texts(rng: random.Random) -> list[str]:
  def one() -> str:
    parts = []
    for _ in range(rng.randint(0, 24)):
      if rng.random() < 0.2:  # any code point but a surrogate
        parts.append(chr(rng.choice([rng.randrange(0x20, 0x3000), rng.randrange(0xE000, 0x110000)])))
      else:
        parts.append(rng.choice(_ODD))
    return "".join(parts)
  return [one() for _ in range(rng.randint(1, 4))]


@needs_numba
@pytest.mark.parametrize("split", ["gpt2", "cl100k"])
def test_compiled_pretokenizer_matches_the_regex(split):
  rng = random.Random(0)
  cases = [_random_texts(rng) for _ in range(1500)] + _batches(4) + [[""], ["", " "], ["a", "", "b "]]
  cases += [["def f(self):\n    return x.get('a')\r\n\n \t\n  ", "'S 'Re 'ſ 12345 a1b22 ((x _y"]]
  for texts in cases:
    expected = pretokenize(texts, split)
    got = _fast_pretokenize.pretokenize(texts, split)
    for name, want, have in zip(("codes", "lengths", "counts", "word ids", "text ends"), expected, got):
      np.testing.assert_array_equal(have, want, err_msg=f"{name} for {texts!r}")
  assert _fast_pretokenize.pretokenize(["lone \ud800 surrogate"]) is None  # left to the reference path


@needs_numba
def test_compiled_substring_counting_matches_numpy():
  for texts in _batches(3) + [["ab", "a", "日本語の文章", "x" * 40]]:
    codes, starts, lengths, counts = _words(texts)
    words = hash_words(codes, starts, lengths, 16)
    reference = count_substrings(words, counts)
    keys, key_counts, firsts, key_lengths, sub_starts, sub_lengths, sub_unique = _fast.hash_count(
        codes, starts, lengths, counts, 16)
    np.testing.assert_array_equal(keys, reference.keys)
    np.testing.assert_array_equal(key_counts, reference.counts)
    np.testing.assert_array_equal(firsts, reference.offsets)
    np.testing.assert_array_equal(key_lengths, reference.lengths)
    np.testing.assert_array_equal(sub_starts, words.substring_starts)
    np.testing.assert_array_equal(sub_lengths, words.substring_lengths)
    np.testing.assert_array_equal(sub_unique, words.substring_unique)


@needs_numba
def test_compiled_viterbi_matches_numpy_including_ties():
  rng = np.random.default_rng(0)
  codes, starts, lengths, counts = _words(_batches(2)[1])
  words = hash_words(codes, starts, lengths, 16)
  count_substrings(words, counts)
  for trial in range(4):
    chosen = np.sort(rng.choice(words.unique_keys.size, size=words.unique_keys.size // (trial + 2), replace=False))
    # Few distinct scores: many equal-score splits, where the tie rule decides.
    scores = -rng.integers(1, 4, size=chosen.size).astype(np.float64)
    args = (words.unique_keys[chosen], 300 + np.arange(chosen.size), scores, np.arange(256), -3.0 - trial % 2)
    expected_ids, expected_offsets = segment(words, *args)
    ids, offsets = _fast.segment(words, *args)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(offsets, expected_offsets)


@needs_numba
def test_compiled_window_merge_matches_numpy():
  numpy_window, compiled_window = SubstringWindow(3), SubstringWindow(3, _fast.merge_window)
  for step, texts in enumerate(_batches(7)):
    codes, starts, lengths, counts = _words(texts)
    for window in (numpy_window, compiled_window):
      window.add(count_substrings(hash_words(codes, starts, lengths, 16), counts))
      window.slots[::7] = step  # as if spelled: slots must travel with their keys
    for name in ("keys", "counts", "locations", "slots"):
      np.testing.assert_array_equal(getattr(compiled_window, name), getattr(numpy_window, name), err_msg=name)
  assert len(compiled_window.batches) == 3


def _spellings(tokenizer) -> list[str]:
  return [to_byte_level(data) for i, data in enumerate(tokenizer.vocab_bytes) if data and i not in tokenizer.special_ids]


@needs_numba
def test_bpe_speller_matches_the_rust_model(smollm2):
  encoder = SurfaceEncoder(smollm2)
  speller = _fast_bpe.BpeSpeller.create(encoder)
  assert speller is not None
  qwen = load_tokenizer(str(qwen_tiktoken_path()))
  # Every Qwen token (151k byte strings) plus pieces with bytes SmolLM2 has no token for.
  spellings = _spellings(qwen)[::3] + [to_byte_level(b) for b in (b"a\x04b", b"\xff\xfe", b"x\x06", b"\xc0")]
  flat, lengths = speller.spell(spellings)
  ids, clipped, truncated = pack_flat(flat, lengths, 7, 0)
  expected_ids, expected_lengths, expected_truncated = encoder.encode_byte_level_packed(spellings, 7, 0)
  np.testing.assert_array_equal(ids, expected_ids)
  np.testing.assert_array_equal(clipped, expected_lengths)
  assert truncated == expected_truncated > 0
  from_bytes = speller.spell_bytes([from_byte_level(spelling) for spelling in spellings])  # surface_forms' entry
  np.testing.assert_array_equal(from_bytes[0], flat)
  np.testing.assert_array_equal(from_bytes[1], lengths)


@needs_numba
def test_bpe_speller_with_an_ignore_merges_base(smollm2):
  qwen = load_tokenizer(str(qwen_tiktoken_path()))
  encoder = SurfaceEncoder(qwen)
  speller = _fast_bpe.BpeSpeller.create(encoder)
  assert speller is not None
  spellings = _spellings(smollm2)[::2] + ["ĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠĠ", "ĊĊĊĊ"]
  flat, lengths = speller.spell(spellings)
  np.testing.assert_array_equal(pack_flat(flat, lengths, 7, 0)[0], encoder.encode_byte_level_packed(spellings, 7, 0)[0])
  from_bytes = speller.spell_bytes([from_byte_level(spelling) for spelling in spellings])
  np.testing.assert_array_equal(from_bytes[0], flat)


@needs_numba
@pytest.mark.parametrize("options", [
    dict(min_vocab_size=600, sequence_length=512),
    dict(batch_vocab_size=1200, prepend_bos=True, append_eos=True, sequence_length=16),
    dict(history_batches=2, vocab_size=4096, noise_std=0.0),
    dict(pretokenizers=("gpt2", "cl100k"), batch_vocab_size=1200, sequence_length=16),
], ids=["full-vocabulary", "batch-vocabulary", "short-window", "two-splits"])
@needs_numba
def test_compiled_and_numpy_samplers_give_identical_batches(smollm2, options):
  options = {**dict(vocab_size=2048, history_batches=4, sequence_length=T, seed=0), **options}
  numpy_sampler = TokenizerSampler(smollm2, compiled=False, **options)
  compiled_sampler = TokenizerSampler(smollm2, compiled=True, **options)
  assert numpy_sampler._surface.speller is None and compiled_sampler._surface.speller is not None
  for texts in _batches(6):
    expected, got = numpy_sampler.sample(texts), compiled_sampler.sample(texts)
    _assert_same(expected, got)
  for row, text in enumerate(texts):
    if options["sequence_length"] == 512:  # nothing truncated
      assert got.decode(row) == text.encode("utf-8")
    else:
      assert text.encode("utf-8").startswith(got.decode(row))
  assert numpy_sampler.sample_fixed(5).encode_batch(texts) == compiled_sampler.sample_fixed(5).encode_batch(texts)


@needs_numba
def test_paths_agree_across_surface_cache_resets_and_resume(smollm2):
  options = dict(vocab_size=2048, history_batches=3, sequence_length=T, seed=3)
  numpy_sampler = TokenizerSampler(smollm2, compiled=False, **options)
  compiled_sampler = TokenizerSampler(smollm2, compiled=True, **options)
  for sampler in (numpy_sampler, compiled_sampler):
    sampler._surface.max_entries = 2500  # forces a reset every few batches
  batches = _batches(6)
  for texts in batches[:4]:
    _assert_same(numpy_sampler.sample(texts), compiled_sampler.sample(texts))
  resumed = TokenizerSampler(smollm2, compiled=True, **options)
  resumed.set_state(numpy_sampler.get_state())  # a numpy-path state resumes on the compiled path
  for texts in batches[4:]:
    expected = numpy_sampler.sample(texts)
    _assert_same(expected, resumed.sample(texts))
    _assert_same(expected, compiled_sampler.sample(texts))


def test_without_numba_the_numpy_path_runs(tmp_path):
  script = tmp_path / "no_numba.py"
  script.write_text(
      "import sys\n"
      "sys.modules['numba'] = None  # import numba -> ImportError, as on a machine without it\n"
      "from zett.assets import smollm2_gguf_path\n"
      "from zett.tokenization import TokenizerSampler, _fast, load_tokenizer\n"
      "assert not _fast.AVAILABLE\n"
      "base = load_tokenizer(str(smollm2_gguf_path()))\n"
      "sampler = TokenizerSampler(base, vocab_size=512, history_batches=2, sequence_length=64)\n"
      "assert not sampler.compiled\n"
      "texts = ['def f(x):\\n    return x + 1', 'Съешь же ещё этих мягких булок']\n"
      "batch = sampler.sample(texts)\n"
      "assert [batch.decode(i) for i in range(2)] == [t.encode() for t in texts]\n"
      "try:\n"
      "  TokenizerSampler(base, vocab_size=512, compiled=True)\n"
      "except ValueError as error:\n"
      "  assert 'numba' in str(error)\n"
      "else:\n"
      "  raise AssertionError('compiled=True without numba must fail')\n"
      "print('ok')\n")
  root = Path(__file__).resolve().parents[1]
  result = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
