"""Baselines on hand-made surface forms: each rule exactly as documented, for input, output and bias."""

from __future__ import annotations

import numpy as np
import pytest

from zett.baselines import BASELINE_METHODS, _sparsemax, make_baseline, overlap_base_ids
from zett.models.family import Embeddings

RNG = np.random.default_rng(0)
BASE = Embeddings(RNG.normal(size=(20, 6)).astype(np.float32), RNG.normal(size=(20, 6)).astype(np.float32),
                  RNG.normal(size=(20,)).astype(np.float32))
# Target tokens: identical to base 3; spelled 4+5; spelled 7+8+9; special copying base 2; identical to base 11.
IDS = np.array([[3, 0, 0], [4, 5, 0], [7, 8, 9], [2, 0, 0], [11, 0, 0]], np.int32)
LENGTHS = np.array([1, 2, 3, 1, 1], np.int32)
SPECIAL = np.array([-1, -1, -1, 2, -1], np.int32)
ROWS = np.arange(5, dtype=np.int32)


def _run(method, **kwargs):
  return make_baseline(method, BASE, IDS, LENGTHS, SPECIAL, **kwargs)(IDS, LENGTHS, SPECIAL, ROWS)


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_special_tokens_copy_the_base_rows(method):
  out = _run(method)
  for got, want in zip(out, BASE):
    np.testing.assert_array_equal(np.asarray(got)[3], np.asarray(want)[2])


def test_fvt_is_the_mean_of_the_decomposition():
  out = _run("fvt")
  for got, want in zip(out, BASE):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got[1], want[[4, 5]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[2], want[[7, 8, 9]].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(got[0], want[3])


def test_lexical_copies_identical_tokens_and_gives_the_rest_the_mean():
  out = _run("lexical")
  for got, want in zip(out, BASE):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(got[[0, 4]], want[[3, 11]])
    np.testing.assert_allclose(got[1], want.mean(0), rtol=1e-5)
  mean = np.asarray(_run("mean").input)
  np.testing.assert_allclose(mean[[0, 1, 2, 4]], np.broadcast_to(BASE.input.mean(0), (4, 6)), rtol=1e-5)


def test_random_matches_statistics_and_is_seeded():
  big_ids = np.zeros((4000, 3), np.int32)
  lengths, special, rows = np.ones(4000, np.int32), np.full(4000, -1, np.int32), np.arange(4000, dtype=np.int32)
  embed = make_baseline("random", BASE, big_ids, lengths, special, seed=1)
  out = np.asarray(embed(big_ids, lengths, special, rows).input)
  np.testing.assert_allclose(out.mean(0), BASE.input.mean(0), atol=0.1)
  np.testing.assert_allclose(out.std(0), BASE.input.std(0), rtol=0.1)
  again = make_baseline("random", BASE, big_ids, lengths, special, seed=1)(big_ids, lengths, special, rows)
  np.testing.assert_array_equal(np.asarray(again.input), out)


def test_focus_mixes_overlapping_tokens_by_similarity():
  assert overlap_base_ids(IDS, LENGTHS, SPECIAL).tolist() == [3, 11]
  out = _run("focus")
  for got, want in zip(out, BASE):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(got[[0, 4]], want[[3, 11]])
  # Row 1 is a convex combination of the overlapping tokens' rows, with the same weights in every matrix.
  inp = np.asarray(out.input)[1]
  weights, *_ = np.linalg.lstsq(BASE.input[[3, 11]].T, inp, rcond=None)
  assert weights.min() >= -1e-5 and weights.sum() == pytest.approx(1.0, abs=1e-4)
  np.testing.assert_allclose(np.asarray(out.bias)[1], weights @ BASE.bias[[3, 11]], atol=1e-4)


def test_sparsemax_projects_onto_the_simplex():
  p = np.asarray(_sparsemax(np.array([[0.9, 0.8, 0.1, -0.5]], np.float32)))
  np.testing.assert_allclose(p, [[0.55, 0.45, 0.0, 0.0]], atol=1e-6)
