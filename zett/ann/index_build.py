"""Building an ANN index: the per-dimension query scale, training each norm band's faiss shards, and (for "pq") the
choice between the norm-banded layout and one band by recall measured on a query sample.

`zett.ann.index` explains the design and owns the built `AnnIndex`; `zett.ann.index_spec` says what to build.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from zett.ann.index import AnnIndex, _Band, _pad, _Transform, exact_topk
from zett.ann.index_spec import _MIN_BAND_ROWS, IndexSpec, _band_layout, _factory, _single_band
from zett.ann.store import EmbeddingStore

_CALIBRATION_QUERIES = 256
"""Query-sample states the build measures layouts and candidate counts on."""


def query_scale_from(hidden_nd: np.ndarray) -> np.ndarray:
  """Per-dimension query scale [D]: the root mean square of sample hidden states, mean-square 1.

  Index vectors are stored as `e * scale` and queries searched as `h / scale`: inner products are
  unchanged, but the quantizer then spends its precision where queries put their weight. LM hidden
  states have a few "massive" dimensions (SmolLM2: one dimension carries ~70% of the logit
  variance), and an unweighted quantizer's error there swamps the ranking.
  """
  rms = np.sqrt(np.mean(np.square(np.asarray(hidden_nd, np.float64)), axis=0))
  rms = np.maximum(rms, 1e-6 * rms.max())
  return (rms / np.sqrt(np.mean(rms**2))).astype(np.float32)


def _row_norms(store: EmbeddingStore) -> np.ndarray:
  return np.concatenate([np.sqrt(np.einsum("nd,nd->n", rows, rows)) for _, rows in store.iter_chunks(1 << 16)])


def build_index(
  store: EmbeddingStore,
  spec: IndexSpec = IndexSpec(),
  bias_v: np.ndarray | None = None,
  query_sample: np.ndarray | None = None,
  progress: bool = True,
  train_sample: int = 65_536,
  seed: int = 0,
) -> AnnIndex:
  """Builds an index over every row of `store` (and its output bias), reading a chunk of rows at a time.

  Args:
    bias_v: output bias [V] (folded in as one more column), or None.
    query_sample: sample hidden states [N, D] of the base model (not the ones recall is reported on);
      their per-dimension scale weights the index (see `query_scale_from`). None: unweighted, one band.
    train_sample: rows per band used to train quantizers (pq, ivf).

  For "pq" with a query sample, the layout and candidate count are chosen by recall on the sample (see
  `IndexSpec.pq_min_recall`); `index.calibration` records the measurement.
  """
  if bias_v is not None:
    bias_v = np.asarray(bias_v, np.float32)
    if bias_v.shape != (store.vocab_size,):
      raise ValueError(f"bias has shape {bias_v.shape}, store {store.path} has {store.vocab_size} rows")
  query_scale = None if query_sample is None else query_scale_from(query_sample)
  if query_scale is not None and query_scale.shape != (store.dim,):
    raise ValueError(f"query sample has width {query_scale.shape[0]}, store {store.path} has {store.dim}")
  if spec.kind == "pq" and spec.shards == 0:
    spec = dataclasses.replace(spec, shards=min(os.cpu_count() or 1, 8))
  transform = _Transform(spec, store.dim, bias_v, query_scale, 0.0)
  max_norm = 0.0
  if spec.kind == "hnsw-l2":
    for start, rows in store.iter_chunks():
      rows = transform.rows(np.arange(start, start + len(rows)), rows, with_norm=False)
      max_norm = max(max_norm, float(np.sqrt(np.einsum("nd,nd->n", rows, rows).max())))
    transform.max_norm = max_norm

  # Longest rows first: they win inner products and get their own, finer codebooks.
  order = np.argsort(-_row_norms(store), kind="stable") if spec.kind == "pq" else np.arange(store.vocab_size)
  layout = _band_layout(spec, store.vocab_size)
  build = lambda layout: _build_bands(store, spec, transform, order, layout, train_sample, seed, progress)  # noqa: E731
  if spec.pq_layout != "auto" or len(layout) == 1 or query_sample is None:
    if spec.pq_layout != "bands":
      layout = _single_band(spec, store.vocab_size)
    index = AnnIndex(build(layout), store, spec, max_norm, bias_v, query_scale)
    if spec.kind == "pq":
      index.calibration = {
        "layout": "norm bands" if len(layout) > 1 else "one band",
        "why": f"pq_layout={spec.pq_layout!r}"
        if spec.pq_layout != "auto"
        else "no query sample"
        if query_sample is None
        else "too few rows for bands",
      }
    return index
  # Both layouts, measured on the sample: the higher recall@1 wins (ties: the bands, which scan fewer codes),
  # then the fewest candidates that reach pq_min_recall.
  ladder = (spec.candidates, 2 * spec.candidates, 4 * spec.candidates)
  queries = np.asarray(query_sample, np.float32)[:_CALIBRATION_QUERIES]
  best_scores = exact_topk(store, queries, 1, bias_v)[0][:, 0]  # one exact pass serves every measurement
  measured = []
  for name, bands in (("norm bands", build(layout)), ("one band", build(_single_band(spec, store.vocab_size)))):
    index = AnnIndex(bands, store, spec, max_norm, bias_v, query_scale)
    measured.append((name, index, [_recall_at_1(index, queries, best_scores, count) for count in ladder]))
  name, index, recalls = max(measured, key=lambda entry: entry[2][0])
  for _, other, _ in measured:
    if other is not index:
      other.close()
  reaching = [count for count, recall in zip(ladder, recalls) if recall >= spec.pq_min_recall]
  chosen = reaching[0] if reaching else ladder[int(np.argmax(recalls))]
  index.spec = dataclasses.replace(index.spec, candidates=chosen)
  index.calibration = {
    "layout": name,
    "candidates": chosen,
    "queries": len(queries),
    "sample_recall_at_1": {entry[0]: dict(zip(map(str, ladder), entry[2])) for entry in measured},
  }
  return index


def _recall_at_1(index: AnnIndex, queries: np.ndarray, best_scores: np.ndarray, candidates: int) -> float:
  """Share of `queries` whose pick reaches the exact best score (`exact_topk`).

  Scores, not ids: rows with identical vectors (e.g. long tokens whose truncated spellings coincide)
  tie, and no index can tell them apart.
  """
  found_scores, _ = index.topk(queries, 1, candidates=candidates)
  return float(np.mean(found_scores[:, 0] >= best_scores - 1e-5 * np.maximum(1.0, np.abs(best_scores))))


def _build_bands(
  store: EmbeddingStore,
  spec: IndexSpec,
  transform: _Transform,
  order: np.ndarray,
  layout: list[tuple[int, int, int, float]],
  train_sample: int,
  seed: int,
  progress: bool,
) -> list[_Band]:
  import faiss
  from tqdm.auto import tqdm

  rng = np.random.default_rng(seed)
  bands = []
  with tqdm(
    total=store.vocab_size,
    unit="tok",
    desc=f"index ({len(layout)} band{'s' * (len(layout) > 1)})",
    disable=not progress,
  ) as bar:
    for start, stop, per_code, share in layout:
      rows = np.sort(order[start:stop])
      dim = -(-transform.width // per_code) * per_code
      factory, metric = _factory(spec, dim, per_code, len(rows))
      template = faiss.index_factory(dim, factory, metric)
      if spec.kind.startswith("hnsw"):
        # downcast_index returns the index's concrete class (here an IndexHNSW*); faiss declares the base Index.
        faiss.downcast_index(template).hnsw.efConstruction = spec.hnsw_ef_construction  # pyright: ignore[reportAttributeAccessIssue]
      if not template.is_trained:
        sample = np.sort(rng.choice(rows, min(train_sample, len(rows)), replace=False))
        template.train(_pad(transform.rows(sample, store.rows(sample)), dim))
      count = max(1, min(spec.shards, len(rows) // _MIN_BAND_ROWS)) if spec.kind == "pq" else 1
      shards = []
      for shard_rows in np.array_split(rows, count):
        shard = faiss.clone_index(template) if count > 1 else template
        for at in range(0, len(shard_rows), 1 << 16):
          ids = shard_rows[at : at + (1 << 16)]
          shard.add(_pad(transform.rows(ids, store.rows(ids)), dim))
          bar.update(len(ids))
        shards.append(shard)
      bands.append(_Band(rows, dim, share, shards))
  return bands
