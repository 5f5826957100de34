"""The ANN index: maximum inner product (not cosine), recall on structured data, save/load checks."""

import json

import numpy as np
import pytest

from zett.ann import (IndexMismatchError, IndexSpec, build_index, build_store, exact_topk, load_index,
                      vocabulary_sha256)
from zett.ann.index_spec import _band_layout

DIM = 32


def _store_from(tmp_path, name, table_vd, vocab=None):
  vocab = vocab or [f"{name}{i}" for i in range(len(table_vd))]
  return build_store(tmp_path / name, len(table_vd), table_vd.shape[1], lambda r: table_vd[r.start:r.stop],
                     vocabulary_sha256(vocab), chunk_size=1024, progress=False)


def _clustered(rng, vocab_size, num_clusters=64):
  """Token-embedding-like data: clusters of directions, norms spread over a factor of ~6."""
  centers = rng.normal(size=(num_clusters, DIM))
  members = centers[rng.integers(num_clusters, size=vocab_size)] + 0.5 * rng.normal(size=(vocab_size, DIM))
  members /= np.linalg.norm(members, axis=1, keepdims=True)
  return (members * rng.lognormal(0.0, 0.45, size=(vocab_size, 1))).astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def clustered_store(tmp_path_factory):
  rng = np.random.default_rng(0)
  return _store_from(tmp_path_factory.mktemp("idx"), "clustered", _clustered(rng, 20000)), rng


@pytest.mark.parametrize("kind", ["pq", "hnsw", "hnsw-l2", "ivf"])
def test_retrieves_maximum_inner_product_not_cosine(tmp_path, kind):
  rng = np.random.default_rng(1)
  # Short vectors point almost exactly at the queries; long ones point ~37 degrees away and win on inner product.
  queries = rng.normal(size=(50, DIM))
  queries /= np.linalg.norm(queries, axis=1, keepdims=True)
  short = queries + 0.05 * rng.normal(size=queries.shape)
  perpendicular = rng.normal(size=queries.shape)
  perpendicular -= np.einsum("nd,nd->n", perpendicular, queries)[:, None] * queries
  perpendicular /= np.linalg.norm(perpendicular, axis=1, keepdims=True)
  long = 8.0 * (0.8 * queries + 0.6 * perpendicular)
  filler = 0.3 * rng.normal(size=(2000, DIM))
  table = np.concatenate([short, long, filler]).astype(np.float16).astype(np.float32)
  store = _store_from(tmp_path, "norms", table)
  index = build_index(store, IndexSpec(kind=kind, storage="Flat", ivf_lists=16, ivf_probe=16), progress=False)
  _, ids = index.topk(queries, k=1)
  cosine_best = np.argmax((table / np.linalg.norm(table, axis=1, keepdims=True)) @ queries.T, axis=0)
  np.testing.assert_array_equal(cosine_best, np.arange(50))  # cosine would pick the short vectors
  exact_ids = exact_topk(store, queries, k=1)[1][:, 0]
  assert np.all((exact_ids >= 50) & (exact_ids < 100))  # inner product picks long vectors...
  assert np.mean(exact_ids == np.arange(50, 100)) > 0.9  # ...mostly the one built for that query
  np.testing.assert_array_equal(ids[:, 0], exact_ids)


@pytest.mark.parametrize("spec", [IndexSpec(), IndexSpec(pq_layout="bands"), IndexSpec(kind="hnsw"),
                                  IndexSpec(kind="ivf", ivf_lists=128, ivf_probe=32)],
                         ids=["pq", "pq-banded", "hnsw", "ivf"])
def test_recall_against_exact_on_clustered_data(clustered_store, spec):
  store, rng = clustered_store
  table = np.asarray(store.table, np.float32)
  # Queries look like hidden states: a sum of a few token directions plus noise.
  queries = table[rng.integers(len(table), size=(300, 3))].sum(1) + 0.3 * rng.normal(size=(300, DIM))
  bias = rng.normal(scale=0.5, size=len(table)).astype(np.float32)
  index = build_index(store, spec, bias_v=bias, progress=False)
  assert (len(index.bands) >= 3) == (spec.pq_layout == "bands")
  exact_scores, exact_ids = exact_topk(store, queries, k=5, bias_v=bias)
  scores, ids = index.topk(queries, k=5)
  recall_at_1 = np.mean(ids[:, 0] == exact_ids[:, 0])
  assert recall_at_1 >= 0.98, recall_at_1
  hit = ids[:, 0] == exact_ids[:, 0]
  # Rescoring is exact: a hit carries the true score, and no candidate can outscore the true best.
  np.testing.assert_allclose(scores[hit, 0], exact_scores[hit, 0], rtol=1e-4, atol=1e-4)
  assert np.all(scores[:, 0] <= exact_scores[:, 0] + 1e-4)
  np.testing.assert_allclose(scores[:, 0], np.einsum("bd,bd->b", queries, table[ids[:, 0]]) + bias[ids[:, 0]],
                             rtol=1e-4, atol=1e-4)


def test_save_load_roundtrip_and_vocabulary_check(tmp_path, clustered_store):
  store, rng = clustered_store
  index = build_index(store, IndexSpec(), query_sample=rng.normal(size=(64, DIM)), progress=False)
  saved = index.save(tmp_path / "ix")
  queries = rng.normal(size=(20, DIM))
  loaded = load_index(store, saved)
  np.testing.assert_array_equal(loaded.topk(queries, k=3)[1], index.topk(queries, k=3)[1])
  assert loaded.spec == index.spec
  np.testing.assert_array_equal(loaded.query_scale, index.query_scale)

  table = np.asarray(store.table, np.float32)
  other = _store_from(tmp_path, "other", table, vocab=[f"x{i}" for i in range(len(table))])
  with pytest.raises(IndexMismatchError, match="built for vocabulary"):
    load_index(other, saved)
  with pytest.raises(IndexMismatchError, match="no ANN index"):
    load_index(store, tmp_path / "missing")
  meta = json.loads((saved / "index.json").read_text())
  (saved / "index.json").write_text(json.dumps({**meta, "format_version": 1}))
  with pytest.raises(IndexMismatchError, match="index format 1"):
    load_index(store, saved)
  (saved / "index.json").write_text(json.dumps(meta))
  data = (saved / "index.faiss").read_bytes()
  (saved / "index.faiss").write_bytes(data[: len(data) // 2])
  with pytest.raises(IndexMismatchError, match="sha256"):
    load_index(store, saved)
  with pytest.raises(IndexMismatchError, match="unreadable"):
    load_index(store, saved, verify_file=False)


def test_saving_over_an_index_with_bias_and_query_scale_leaves_none_of_its_files(tmp_path, clustered_store):
  store, rng = clustered_store
  bias = rng.normal(scale=0.5, size=store.vocab_size).astype(np.float32)
  full = build_index(store, IndexSpec(), bias_v=bias, query_sample=rng.normal(size=(64, DIM)), progress=False)
  folder = full.save(tmp_path / "ix")
  assert (folder / "index_bias.npy").is_file() and (folder / "index_query_scale.npy").is_file()
  plain = build_index(store, IndexSpec(), progress=False)
  assert plain.bias_v is None and plain.query_scale is None
  plain.save(folder)
  assert sorted(path.name for path in folder.iterdir()) == ["index.faiss", "index.json", "index_rows.npy"]
  loaded = load_index(store, folder)
  assert loaded.bias_v is None and loaded.query_scale is None
  queries = rng.normal(size=(20, DIM))
  np.testing.assert_array_equal(loaded.topk(queries, k=3)[1], plain.topk(queries, k=3)[1])


def test_query_scale_rescues_a_massive_dimension(tmp_path):
  """Hidden states with one huge dimension: weighting the quantizer by the query scale keeps recall."""
  rng = np.random.default_rng(3)
  table = _clustered(rng, 20000)
  store = _store_from(tmp_path, "massive", table)
  scale = np.ones(DIM)
  scale[5] = 40.0
  queries = rng.normal(size=(400, DIM)) * scale
  exact_ids = exact_topk(store, queries, k=1)[1][:, 0]
  spec = IndexSpec(candidates=64, pq_bands=((1.0, 2, 1.0),))
  weighted = build_index(store, spec, query_sample=queries[:200], progress=False)
  plain = build_index(store, spec, progress=False)
  weighted_recall = np.mean(weighted.topk(queries[200:])[1][:, 0] == exact_ids[200:])
  plain_recall = np.mean(plain.topk(queries[200:])[1][:, 0] == exact_ids[200:])
  assert weighted_recall > plain_recall + 0.2, (weighted_recall, plain_recall)


def test_norm_band_layout():
  spec = IndexSpec()
  layout = _band_layout(spec, 1_000_000)
  assert [(start, stop, per_code) for start, stop, per_code, _ in layout] == [
      (0, 50_000, 1), (50_000, 150_000, 1), (150_000, 400_000, 4), (400_000, 1_000_000, 8)]
  # Bands too small to train their own codebooks merge: finest code, summed candidate share.
  small = _band_layout(spec, 2100)
  assert small == [(0, 2100, 1, 1.0)]
  assert sum(share for *_, share in _band_layout(spec, 20_000)) == pytest.approx(1.0)
  assert _band_layout(IndexSpec(kind="hnsw"), 5000) == [(0, 5000, 1, 1.0)]
  with pytest.raises(ValueError, match="pq_min_recall"):
    IndexSpec(pq_min_recall=1.5)
  with pytest.raises(ValueError, match="pq_layout"):
    IndexSpec(pq_layout="graph")
  with pytest.raises(ValueError, match="pq_bands"):
    IndexSpec(pq_bands=((0.5, 1, 1.0),))  # does not cover every row
  with pytest.raises(ValueError, match="pq_bands"):
    IndexSpec(pq_bands=((0.5, 1), (1.0, 4)))  # no candidate shares


def test_band_layout_and_candidates_are_chosen_by_recall_on_the_query_sample(clustered_store, tmp_path):
  store, rng = clustered_store
  table = np.asarray(store.table, np.float32)
  sample = table[rng.integers(len(table), size=(300, 3))].sum(1) + 0.3 * rng.normal(size=(300, DIM))
  # Two candidates, so recall is below 1 and the measurement has something to choose.
  auto = build_index(store, IndexSpec(candidates=2), query_sample=sample, progress=False)
  calibration = auto.calibration
  recalls = calibration["sample_recall_at_1"]
  assert set(recalls) == {"norm bands", "one band"} and all(set(r) == {"2", "4", "8"} for r in recalls.values())
  # The recorded recall is what the chosen index does on the sample (exact score reached, ties count).
  exact_scores = exact_topk(store, sample[:256], k=1)[0][:, 0]
  found_scores = auto.topk(sample[:256], candidates=2)[0][:, 0]
  assert recalls[calibration["layout"]]["2"] == pytest.approx(np.mean(np.isclose(found_scores, exact_scores,
                                                                                  rtol=1e-5, atol=1e-5)))
  other = "one band" if calibration["layout"] == "norm bands" else "norm bands"
  assert recalls[calibration["layout"]]["2"] >= recalls[other]["2"]
  assert (len(auto.bands) >= 3) == (calibration["layout"] == "norm bands")
  # Candidates: the fewest of 1x/2x/4x reaching pq_min_recall, else the best.
  chosen = recalls[calibration["layout"]]
  reaching = [int(c) for c, r in chosen.items() if r >= 0.99]
  assert calibration["candidates"] == auto.spec.candidates == (min(reaching) if reaching else
                                                               int(max(chosen, key=chosen.get)))
  auto.save(tmp_path)
  loaded = load_index(store, tmp_path)
  assert loaded.calibration == calibration and loaded.spec.candidates == auto.spec.candidates
  unchecked = build_index(store, IndexSpec(), progress=False)
  assert len(unchecked.bands) == 1 and unchecked.calibration["why"] == "no query sample"


def test_bands_are_sorted_by_norm_and_sharded_search_matches_one_shard(clustered_store):
  store, rng = clustered_store
  table = np.asarray(store.table, np.float32)
  queries = table[rng.integers(len(table), size=(200, 3))].sum(1) + 0.3 * rng.normal(size=(200, DIM))
  sample = table[rng.integers(len(table), size=(100, 3))].sum(1)
  one = build_index(store, IndexSpec(shards=1, pq_layout="bands"), query_sample=sample, progress=False)
  three = build_index(store, IndexSpec(shards=3, pq_layout="bands"), query_sample=sample, progress=False)
  assert [len(band.shards) for band in one.bands] == [1] * len(one.bands)
  assert max(len(band.shards) for band in three.bands) == 3
  norms = np.linalg.norm(table, axis=1)
  assert len(one.bands) >= 3
  for longer, shorter in zip(one.bands, one.bands[1:]):
    assert norms[longer.rows].min() >= norms[shorter.rows].max()
  np.testing.assert_array_equal(np.sort(np.concatenate([band.rows for band in three.bands])), np.arange(len(table)))
  # Shards of a band share its codebooks: merging their top-k gives the unsharded candidates
  # (up to ties in the fast scan's 16-bit quantized scores at the cut-off).
  overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(one.candidates(queries), three.candidates(queries))]
  assert np.mean(overlap) >= 0.97, np.mean(overlap)
  np.testing.assert_array_equal(one.topk(queries, k=1)[1], three.topk(queries, k=1)[1])

