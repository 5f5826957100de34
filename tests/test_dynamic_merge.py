"""The batch-level merger against a recount-everything reference, its invariants and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zett.dynamic import BaseBatch, MergeInputError, can_merge, merge_batch, split_texts
from zett.testing.reference_merge import NO_INTERNAL_WHITESPACE, reference_merge

_ALPHABET = [b"a", b"b", b"ab", b"c", b" ", b" a", b"\n", b"b ", b"a b", b"\xe3\x81", b"\x82"]
_examples = st.lists(st.tuples(st.sampled_from(_ALPHABET), st.booleans()), min_size=1, max_size=14)
_batches = st.lists(_examples, min_size=1, max_size=5)
_rules = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"max_merges": st.integers(0, 12)}),
    st.fixed_dictionaries({"target_reduction": st.floats(0.0, 0.99)}),
    st.fixed_dictionaries({"min_frequency": st.integers(1, 5)}),
    st.fixed_dictionaries({"max_token_length": st.integers(1, 5)}),
    st.fixed_dictionaries({"max_merges": st.integers(0, 12), "target_reduction": st.floats(0.0, 0.99),
                           "min_frequency": st.integers(1, 4), "max_token_length": st.integers(2, 6)}),
)


def _split(batch):
  return [[p for p, _ in ex] for ex in batch], [[s for _, s in ex] for ex in batch]


@settings(max_examples=300, deadline=None)
@given(batch=_batches, rules=_rules, deduplicate=st.booleans())
def test_incremental_equals_reference(batch, rules, deduplicate):
  pieces, starts = _split(batch)
  result = merge_batch(BaseBatch.from_pieces(pieces, starts), deduplicate_pretokens=deduplicate, **rules)
  ref_pieces, ref_spans, ref_merges, ref_reason = reference_merge(pieces, starts, **rules)
  assert result.pieces == ref_pieces
  assert [s.tolist() for s in result.spans] == [[list(x) for x in s] for s in ref_spans]
  assert result.merges == ref_merges
  assert result.stop_reason == ref_reason
  # New vocabulary: merged tokens not in the base vocabulary, in order of the merge that made them.
  base = {p for ex in pieces for p in ex}
  present = {p for ex, spans in zip(ref_pieces, ref_spans) for p, (s, e) in zip(ex, spans) if e - s > 1}
  expected_new = list(dict.fromkeys(a + b for a, b in ref_merges if a + b in present and a + b not in base))
  assert result.new_tokens == expected_new
  new_ids = result.new_token_ids
  base_batch = BaseBatch.from_pieces(pieces, starts)
  base_id = {t: i for i, t in enumerate(base_batch.id_to_bytes)}
  for ex_pieces, ex_ids in zip(result.pieces, result.ids):
    assert ex_ids.tolist() == [base_id[p] if p in base_id else new_ids[p] for p in ex_pieces]


@settings(max_examples=200, deadline=None)
@given(batch=_batches, rules=_rules)
def test_invariants(batch, rules):
  pieces, starts = _split(batch)
  result = merge_batch(BaseBatch.from_pieces(pieces, starts), **rules)
  for original, merged, spans, flags in zip(pieces, result.pieces, result.spans, starts):
    assert b"".join(merged) == b"".join(original)
    assert spans[0, 0] == 0 and spans[-1, 1] == len(original) and (spans[1:, 0] == spans[:-1, 1]).all()
    for token, (s, e) in zip(merged, spans.tolist()):
      assert token == b"".join(original[s:e])
      if e - s > 1:
        assert NO_INTERNAL_WHITESPACE.fullmatch(token), token
        assert not any(flags[s + 1:e]), "a merged token crosses a pre-token boundary"
  assert 0.0 <= result.reduction < 1.0
  if rules.get("max_token_length"):
    assert all((s[:, 1] - s[:, 0] <= rules["max_token_length"]).all() for s in result.spans)
  if rules.get("target_reduction") is not None and result.stop_reason == "target_reduction":
    assert result.reduction >= rules["target_reduction"] - 1e-12


@settings(max_examples=100, deadline=None)
@given(batch=_batches)
def test_word_level_leaves_no_mergeable_pair(batch):
  pieces, starts = _split(batch)
  result = merge_batch(BaseBatch.from_pieces(pieces, starts))
  assert result.stop_reason == "no_pairs"
  for merged, spans, flags in zip(result.pieces, result.spans, starts):
    for (x, (_, _)), (y, (s, _)) in zip(zip(merged, spans.tolist()), zip(merged[1:], spans[1:].tolist())):
      assert flags[s] or not can_merge(x, y)


def test_whitespace_rule():
  assert can_merge(b" ", b"world") and can_merge(b"\n", b"\n") and can_merge(b" wor", b"ld")
  assert not can_merge(b"a", b" b") and not can_merge(b"word", b" ") and not can_merge(b"a b", b"c")
  assert can_merge(b"\xe3\x81", b"\x82")  # split UTF-8 characters merge back


def test_tie_break_is_smallest_bytes_pair():
  pieces = [[b"b", b"c"], [b"a", b"b"], [b"c", b"a"]]
  result = merge_batch(BaseBatch.from_pieces(pieces, [[True, False]] * 3), max_merges=1)
  assert result.merges == [(b"a", b"b")]


def test_overlapping_pair_merges_left_to_right():
  result = merge_batch(BaseBatch.from_pieces([[b"a"] * 5], [[True] + [False] * 4]), max_merges=1)
  assert result.pieces == [[b"aa", b"aa", b"a"]]


def test_special_tokens_are_never_merged():
  vocab = [b"<s>", b"a", b"b"]
  batch = BaseBatch([np.array([0, 1, 2, 0, 1, 2])], [np.zeros(6, bool)], vocab, frozenset({0}))
  result = merge_batch(batch)
  assert result.pieces == [[b"<s>", b"ab", b"<s>", b"ab"]]
  assert result.ids[0].tolist() == [0, 3, 0, 3] and result.new_tokens == [b"ab"]
  assert result.new_token_base_ids == [(1, 2)]
  ref = reference_merge([[vocab[i] for i in batch.token_ids[0]]], [[False] * 6], frozen=[[1, 0, 0, 1, 0, 0]])
  assert ref[0] == result.pieces


def test_merged_token_in_base_vocab_keeps_base_id():
  batch = BaseBatch([np.array([1, 2])], [np.array([True, False])], [b"<s>", b"a", b"b", b"ab"])
  result = merge_batch(batch)
  assert result.ids[0].tolist() == [3] and result.new_tokens == []


@pytest.fixture(scope="module")
def byte_level_tokenizer(textwrap_bpe):
  return textwrap_bpe(400, ("<|endoftext|>",))


_TEXTS = ["Hello world, how are   you?\n\n  12345 données", "日本語のテキスト。 Это   тест!", "def f(x):\n    return x"]


def test_real_tokenizer_round_trip_and_word_level(byte_level_tokenizer):
  batch = split_texts(byte_level_tokenizer, _TEXTS)
  result = merge_batch(batch)
  for text, merged in zip(_TEXTS, result.pieces):
    assert b"".join(merged).decode("utf-8") == text
  # Byte-level pre-tokens match WS* NONWS*, so word level is one token per pre-token.
  for text, merged in zip(_TEXTS, result.pieces):
    pretokens = byte_level_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    assert len(merged) == len(pretokens)
  partial = merge_batch(batch, target_reduction=0.2)
  assert partial.reduction >= 0.2 and partial.num_merged_tokens > result.num_merged_tokens
  # Special tokens added by the tokenizer stay alone.
  encoded = split_texts(byte_level_tokenizer, ["<|endoftext|>hello<|endoftext|>"])
  assert 0 in encoded.special_ids and merge_batch(encoded).pieces[0][0] == b"<|endoftext|>"


@pytest.mark.parametrize("make_batch, message", [
    (lambda: BaseBatch([], [], [b"a"]), "empty batch"),
    (lambda: BaseBatch.from_pieces([[b"a"], []], [[True], []]), "example 1 is empty"),
    (lambda: BaseBatch([np.array([0, 1])], [np.array([True, False])], [b"a", b""]), "empty bytes"),
    (lambda: BaseBatch([np.array([0, 5])], [np.array([True, False])], [b"a"]), "out of range"),
    (lambda: BaseBatch([np.array([0, 0])], [np.array([True])], [b"a"]), "pre-token flags"),
])
def test_bad_batches(make_batch, message):
  with pytest.raises(MergeInputError, match=message):
    merge_batch(make_batch())


def test_empty_string_from_tokenizer_is_an_error(byte_level_tokenizer):
  with pytest.raises(MergeInputError, match="example 1 is empty"):
    merge_batch(split_texts(byte_level_tokenizer, ["hello", ""]))


@pytest.mark.parametrize("rules", [{"target_reduction": 1.0}, {"target_reduction": -0.1}, {"target_reduction": 1.5},
                                   {"max_merges": -1}, {"min_frequency": 0}, {"max_token_length": 0}])
def test_bad_stopping_rules(rules):
  batch = BaseBatch.from_pieces([[b"a", b"b"]], [[True, False]])
  with pytest.raises(MergeInputError):
    merge_batch(batch, **rules)


def test_max_token_length_is_decided_per_position():
  # "ab"+"c" spans 3 base tokens in the first example but 2 in the second (base token "ab").
  pieces = [[b"a", b"b", b"c"], [b"ab", b"c"], [b"ab", b"c"]]
  result = merge_batch(BaseBatch.from_pieces(pieces, [[True, False, False], [True, False], [True, False]]),
                       max_token_length=2)
  assert result.pieces == [[b"ab", b"c"], [b"abc"], [b"abc"]]
  assert result.spans[0].tolist() == [[0, 2], [2, 3]]
