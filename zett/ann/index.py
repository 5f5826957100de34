"""Maximum-inner-product search over a store's output embeddings, then exact rescoring.

Next-token logits are inner products `h . e_v (+ b_v)`, not cosines: a long embedding wins even
when its direction is a little off. Every index kind here ranks by inner product: faiss's
inner-product metric (product quantization, HNSW, IVF), or for "hnsw-l2" the classic MIPS-to-L2
reduction (append `sqrt(M^2 - |e|^2)` to each row and 0 to each query, so L2-nearest == max inner
product). An output bias is folded in exactly as one more column: `[e, b] . [h, 1] = h . e + b`.

Chosen by measurement on real SmolLM2 hidden states (bench/million_vocab.py): the default "pq"
index is an exhaustive 4-bit product-quantized scan ("fast scan") in **norm bands**. Rows are
sorted by length and split into bands (longest 5%, next 10%, next 25%, the rest), each with its
own codebooks; long rows get one 4-bit code per dimension, short ones one per 4 or 8 dimensions,
and every band proposes its own share of the candidates. Why: inner-product winners are long rows
(at 1M tokens every SmolLM2 winner was among the longest 14%), and a codebook trained on all rows
pulls the long ones toward the middle, under-scoring exactly the winners (by ~1.2 logits on
average at 1M, so the true best fell past the 8,192th candidate for 1% of states). Per-band
codebooks remove that bias; coarse codes for the short rows pay for it. That holds only where the
winners are long rows, so the build measures it: it builds the banded layout and one fine band,
keeps the one with the higher recall@1 against exact search on the query sample (at 100k tokens,
where base tokens of every length win, bands measured 0.75 and one band 0.998), and sets the
candidate count from the same measurement (`IndexSpec.pq_min_recall`); `AnnIndex.calibration`
records the numbers. Vectors are also scaled
per dimension by the hidden states' RMS (`query_scale_from`) so precision goes where queries look,
and each band's scan is split into shards searched on parallel threads (one query's fast scan is
single-threaded in faiss). Graph indexes (faiss HNSW, hnswlib, usearch) and IVF reach only
~0.6-0.75 recall@1 there at useful speeds: LM hidden states are far out of the embeddings'
distribution (a few "massive" dimensions), so graph walks and coarse quantizers built from the
embeddings alone steer to the wrong region; an exhaustive scan cannot miss a region. The index only
proposes candidates; they are rescored exactly from the store (with the bias), so the codes may be
lossy without biasing the chosen token.

An index is saved as `<dir>/index.faiss` (the serialized faiss index of every band shard, one after
another) + `<dir>/index.json` + `index_rows.npy` (store row of each band position) (+
`index_bias.npy`, `index_query_scale.npy`); the JSON records the store's vocabulary sha256 and
shape, and loading refuses an index built for another vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zett.ann.store import EmbeddingStore
from zett.errors import ZettError
from zett.sha256 import file_sha256

_FORMAT_VERSION = 3
_INDEX_FILE = "index.faiss"
_META_FILE = "index.json"
_ROWS_FILE = "index_rows.npy"
_BIAS_FILE = "index_bias.npy"
_SCALE_FILE = "index_query_scale.npy"
_MIN_BAND_ROWS = 1024
_CALIBRATION_QUERIES = 256
"""Query-sample states the build measures layouts and candidate counts on."""
"""Smaller norm bands merge into their neighbour: each band trains its own 16-centroid codebooks."""


class IndexMismatchError(ZettError, ValueError):
  """An index that is missing, corrupt, or belongs to a different vocabulary; names the file."""


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """How to build the index. Defaults are the configuration chosen in bench/million_vocab.py."""

  kind: str = "pq"
  """"pq" (exhaustive 4-bit product-quantized scan in norm bands, SIMD "fast scan", inner product),
  "hnsw" (graph, inner product), "hnsw-l2" (graph, L2 over norm-augmented vectors),
  "ivf" (inverted lists, inner product) or "flat" (exact, for reference)."""
  storage: str = "SQfp16"
  """faiss vector codec inside hnsw/ivf indexes: "Flat" (float32), "SQfp16", "SQ8"."""
  pq_bands: tuple[tuple[float, int, float], ...] = ((0.05, 1, 0.5), (0.15, 1, 0.25), (0.4, 4, 0.125), (1.0, 8, 0.125))
  """"pq": norm bands, longest rows first, as (cumulative fraction of rows, dimensions per 4-bit
  code, share of the candidates). Measured at 1M x 576 on SmolLM2 states with 1024 candidates:
  recall@1 0.996 with 29% of the codes of a single band with one code per dimension (0.973 there)."""
  pq_layout: str = "auto"
  """"pq": "auto" (chosen by measurement, see `pq_min_recall`), "bands" or "one band"."""
  pq_min_recall: float = 0.99
  """"pq": what `build_index` aims for on its query sample. It builds both the norm-banded layout and
  one band at the finest code, measures recall@1 against exact search on (up to 256 of) the sample
  at 1x, 2x and 4x `candidates`, keeps the layout with the higher recall at 1x (ties: the bands, a
  third of the codes), then the fewest candidates reaching this recall (else the best of the three).
  Bands win where winners are long rows (SmolLM2 + FVT rows at 1M); one band wins at 100k, where
  base tokens of every length win (bands 0.75 there). `AnnIndex.calibration` records the numbers."""
  shards: int = 0
  """"pq": each band is split into this many shards searched on parallel threads (0: one per CPU
  core, at most 8; resolved when the index is built)."""
  hnsw_neighbors: int = 32
  """"hnsw", "hnsw-l2": graph neighbours per node (faiss M)."""
  hnsw_ef_construction: int = 100
  """"hnsw", "hnsw-l2": candidate list length while building the graph."""
  hnsw_ef_search: int = 256
  """"hnsw", "hnsw-l2": candidate list length while searching (`AnnIndex.set_search_effort` changes it)."""
  ivf_lists: int = 0
  """"ivf": inverted lists; 0 = about 4 * sqrt(V)."""
  ivf_probe: int = 32
  """"ivf": lists searched per query."""
  candidates: int = 1024
  """Candidates fetched per query (split evenly over the norm bands) and rescored exactly."""

  def __post_init__(self):
    if self.kind not in ("pq", "hnsw", "hnsw-l2", "ivf", "flat"):
      raise ValueError(f"IndexSpec.kind must be pq, hnsw, hnsw-l2, ivf or flat, got {self.kind!r}")
    if self.storage not in ("Flat", "SQfp16", "SQ8"):
      raise ValueError(f"IndexSpec.storage must be Flat, SQfp16 or SQ8, got {self.storage!r}")
    # Tuples even when read back from JSON lists, so a loaded spec equals the built one.
    try:
      bands = tuple((float(fraction), int(per_code), float(share)) for fraction, per_code, share in self.pq_bands)
    except (TypeError, ValueError):
      bands = ()
    object.__setattr__(self, "pq_bands", bands)
    fractions = [band[0] for band in bands]
    if (
      not bands
      or fractions[-1] != 1.0
      or any(b <= a for a, b in zip([0.0] + fractions, fractions))
      or any(per_code < 1 or share <= 0 for _, per_code, share in bands)
    ):
      raise ValueError(
        f"IndexSpec.pq_bands must be (fraction, dims per code >= 1, candidate share > 0) with "
        f"fractions rising to 1.0, got {self.pq_bands!r}"
      )
    if self.pq_layout not in ("auto", "bands", "one band"):
      raise ValueError(f"IndexSpec.pq_layout must be auto, bands or one band, got {self.pq_layout!r}")
    if not 0.0 <= self.pq_min_recall <= 1.0:
      raise ValueError(f"IndexSpec.pq_min_recall must be in [0, 1], got {self.pq_min_recall}")
    if self.shards < 0 or self.candidates < 1:
      raise ValueError(f"IndexSpec.shards must be >= 0 and candidates >= 1, got {self.shards}, {self.candidates}")


def _band_layout(spec: IndexSpec, vocab_size: int) -> list[tuple[int, int, int, float]]:
  """(start, stop, dims per code, candidate share) over rows sorted longest first.

  Bands under _MIN_BAND_ROWS merge into a neighbour (finest code, summed share).
  """
  if spec.kind != "pq":
    return [(0, vocab_size, 1, 1.0)]
  layout: list[list] = []
  start = 0
  for fraction, per_code, share in spec.pq_bands:
    stop = vocab_size if fraction == 1.0 else int(round(fraction * vocab_size))
    if stop <= start:
      continue
    if layout and layout[-1][1] - layout[-1][0] < _MIN_BAND_ROWS:
      layout[-1][1:] = [stop, min(layout[-1][2], per_code), layout[-1][3] + share]
    else:
      layout.append([start, stop, per_code, share])
    start = stop
  if len(layout) > 1 and layout[-1][1] - layout[-1][0] < _MIN_BAND_ROWS:
    tail = layout.pop()
    layout[-1][1:] = [tail[1], min(layout[-1][2], tail[2]), layout[-1][3] + tail[3]]
  return [tuple(band) for band in layout]


def _single_band(spec: IndexSpec, vocab_size: int) -> list[tuple[int, int, int, float]]:
  return [(0, vocab_size, min(per_code for _, per_code, _ in spec.pq_bands), 1.0)]


def _factory(spec: IndexSpec, dim: int, pq_dims_per_code: int, vocab_size: int) -> tuple[str, int]:
  import faiss

  codec = "" if spec.storage == "Flat" else f"_{spec.storage}"
  if spec.kind == "pq":
    return f"PQ{dim // pq_dims_per_code}x4fs", faiss.METRIC_INNER_PRODUCT
  if spec.kind == "hnsw":
    return f"HNSW{spec.hnsw_neighbors}{codec}", faiss.METRIC_INNER_PRODUCT
  if spec.kind == "hnsw-l2":
    return f"HNSW{spec.hnsw_neighbors}{codec}", faiss.METRIC_L2
  if spec.kind == "ivf":
    lists = spec.ivf_lists or max(1, int(4 * np.sqrt(vocab_size)))
    return f"IVF{lists},{spec.storage}", faiss.METRIC_INNER_PRODUCT
  return "Flat", faiss.METRIC_INNER_PRODUCT


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


class _Transform:
  """Maps store rows and queries into the index's space so that index scores rank by `h . e + b`."""

  def __init__(self, spec: IndexSpec, dim: int, bias_v, query_scale, max_norm: float):
    self.spec, self.dim, self.bias_v, self.max_norm = spec, dim, bias_v, max_norm
    self.query_scale = np.ones(dim, np.float32) if query_scale is None else np.asarray(query_scale, np.float32)
    self.width = dim + (bias_v is not None) + (spec.kind == "hnsw-l2")
    """Columns before padding: the row, its bias, its norm-completing column ("hnsw-l2")."""

  def rows(self, ids: np.ndarray, rows_nd: np.ndarray, with_norm: bool = True) -> np.ndarray:
    columns = [rows_nd * self.query_scale]
    if self.bias_v is not None:
      columns.append(self.bias_v[ids, None])
    if self.spec.kind == "hnsw-l2" and with_norm:
      partial = np.concatenate(columns, axis=1)
      columns.append(np.sqrt(np.maximum(self.max_norm**2 - np.einsum("nd,nd->n", partial, partial), 0.0))[:, None])
    return np.concatenate(columns, axis=1).astype(np.float32)

  def queries(self, queries_bd: np.ndarray) -> np.ndarray:
    queries = np.asarray(queries_bd, np.float32).reshape(-1, self.dim)
    columns = [queries / self.query_scale]
    if self.bias_v is not None:
      columns.append(np.ones((len(queries), 1), np.float32))
    if self.spec.kind == "hnsw-l2":
      columns.append(np.zeros((len(queries), 1), np.float32))
    return np.concatenate(columns, axis=1)


def _pad(x: np.ndarray, width: int) -> np.ndarray:
  if x.shape[1] < width:
    x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
  return np.ascontiguousarray(x, dtype=np.float32)


@dataclasses.dataclass
class _Band:
  """One norm band: its store rows (band position -> row id), index width, candidate share, faiss shards."""

  rows: np.ndarray
  dim: int
  share: float
  shards: list
  """faiss indexes over consecutive slices of `rows`; shard s is searched on thread s."""

  def __post_init__(self):
    self.offsets = np.cumsum([0] + [shard.ntotal for shard in self.shards])[:-1]

  def merge(self, found: list[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Store row ids [B, k] of the best approximate scores over this band's shard results."""
    scores = np.concatenate([scores for scores, _ in found], axis=1)
    positions = np.concatenate(
      [np.where(ids < 0, -1, ids + offset) for (_, ids), offset in zip(found, self.offsets)], axis=1
    )
    if len(found) > 1:  # one band's shards share codebooks, so their approximate scores compare
      positions = np.take_along_axis(positions, np.argsort(-scores, axis=1, kind="stable")[:, :k], 1)
    return np.where(positions < 0, -1, self.rows[np.maximum(positions, 0)])


class AnnIndex:
  """Faiss indexes over an EmbeddingStore's norm bands, answering exact-rescored maximum-inner-product top-k.

  Attributes:
    bands: the norm bands (longest rows first), each with its row ids and faiss shard indexes over
      transformed rows (scaled by `query_scale`, plus a bias column when `bias_v` is set, plus the
      norm-completing column for "hnsw-l2", zero-padded to a whole number of PQ codes).
    store: the EmbeddingStore the ids index.
    spec: the IndexSpec it was built with (`shards` resolved).
    bias_v: float32 [V] output bias folded into the index and the rescoring, or None.
    query_scale: float32 [D] per-dimension scale (see `query_scale_from`), or None.
    max_norm: largest transformed row norm, used by "hnsw-l2".
  """

  def __init__(
    self,
    bands: list[_Band],
    store: EmbeddingStore,
    spec: IndexSpec,
    max_norm: float,
    bias_v: np.ndarray | None = None,
    query_scale: np.ndarray | None = None,
  ):
    self.bands = bands
    self.store = store
    self.spec = spec
    self.max_norm = max_norm
    self.bias_v = None if bias_v is None else np.asarray(bias_v, np.float32)
    self.query_scale = None if query_scale is None else np.asarray(query_scale, np.float32)
    self._transform = _Transform(spec, store.dim, self.bias_v, self.query_scale, max_norm)
    self._columns = max(len(band.shards) for band in bands)
    self._pool = ThreadPoolExecutor(self._columns - 1) if self._columns > 1 else None
    self.calibration: dict | None = None
    """How `build_index` chose the band layout (recall measured on the query sample), saved with the index."""
    self.set_search_effort()

  def close(self) -> None:
    """Stops the search threads (the index cannot search afterwards)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True)
      self._pool = None

  def set_search_effort(self, hnsw_ef_search: int | None = None, ivf_probe: int | None = None) -> None:
    """Trades speed for recall at query time (no rebuild)."""
    import faiss

    self.spec = dataclasses.replace(
      self.spec, hnsw_ef_search=hnsw_ef_search or self.spec.hnsw_ef_search, ivf_probe=ivf_probe or self.spec.ivf_probe
    )
    for shard in (shard for band in self.bands for shard in band.shards):
      if self.spec.kind.startswith("hnsw"):
        # downcast_index returns the index's concrete class (here an IndexHNSW*); faiss declares the base Index.
        faiss.downcast_index(shard).hnsw.efSearch = self.spec.hnsw_ef_search  # pyright: ignore[reportAttributeAccessIssue]
      elif self.spec.kind == "ivf":
        faiss.extract_index_ivf(shard).nprobe = self.spec.ivf_probe

  def candidates(self, queries_bd: np.ndarray, count: int | None = None) -> np.ndarray:
    """Candidate ids int64 [B, >= count], each band's share of them (-1 where a band has fewer rows)."""
    queries = self._transform.queries(queries_bd)
    count = count or self.spec.candidates
    total_share = sum(band.share for band in self.bands)
    ks = [max(1, int(np.ceil(count * band.share / total_share))) for band in self.bands]
    padded = [_pad(queries, band.dim) for band in self.bands]

    def search_column(column: int) -> list:
      return [
        band.shards[column].search(padded[number], ks[number]) if column < len(band.shards) else None
        for number, band in enumerate(self.bands)
      ]

    # One thread per shard column, all bands in one go: faiss scans one query on one thread, and
    # waking the threads once per query (not once per band) keeps the hand-off cheap.
    futures = []
    if self._columns > 1:
      assert self._pool is not None, "searched after close()"
      futures = [self._pool.submit(search_column, column) for column in range(1, self._columns)]
    columns = [search_column(0)] + [future.result() for future in futures]
    return np.concatenate(
      [
        band.merge([column[number] for column in columns if column[number] is not None], ks[number])
        for number, band in enumerate(self.bands)
      ],
      axis=1,
    )

  def topk(self, queries_bd: np.ndarray, k: int = 1, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores and ids [B, k] of the best candidates by `q . e (+ bias)`, best first."""
    queries = np.asarray(queries_bd, dtype=np.float32).reshape(-1, self.store.dim)
    ids = self.candidates(queries, max(k, candidates or self.spec.candidates))
    return rescore(self.store, queries, ids, k, self.bias_v)

  def save(self, directory: str | os.PathLike | None = None) -> Path:
    """Writes index.faiss + index.json + index_rows.npy (+ bias / query scale .npy) into `directory`."""
    import faiss

    directory = Path(directory or self.store.path)
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / _INDEX_FILE
    parts = []
    with open(index_path, "wb") as f:
      for number, band in enumerate(self.bands):
        for shard in band.shards:
          data = faiss.serialize_index(shard)
          f.write(data.tobytes())
          parts.append([number, len(data)])
    np.save(directory / _ROWS_FILE, np.concatenate([band.rows for band in self.bands]))
    if self.bias_v is not None:
      np.save(directory / _BIAS_FILE, self.bias_v)
    if self.query_scale is not None:
      np.save(directory / _SCALE_FILE, self.query_scale)
    meta = {
      "format_version": _FORMAT_VERSION,
      "vocab_sha256": self.store.vocab_sha256,
      "vocab_size": self.store.vocab_size,
      "dim": self.store.dim,
      "max_norm": self.max_norm,
      "spec": dataclasses.asdict(self.spec),
      "bands": [[len(band.rows), band.dim, band.share] for band in self.bands],
      "parts": parts,
      "has_bias": self.bias_v is not None,
      "has_query_scale": self.query_scale is not None,
      "calibration": self.calibration,
      "index_sha256": file_sha256(index_path),
      "faiss_version": faiss.__version__,
    }
    (directory / _META_FILE).write_text(json.dumps(meta, indent=1))
    return directory


def rescore(
  store: EmbeddingStore, queries_bd: np.ndarray, candidate_ids: np.ndarray, k: int, bias_v: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Exact `q . e (+ bias)` over each query's candidates; returns (scores, ids) [B, k], best first."""
  ids = np.where(candidate_ids < 0, 0, candidate_ids)
  # einsum, not `@`: a threaded BLAS matrix-vector product over a few thousand rows spends more
  # waking its threads (8 ms vs 0.7 ms for 4,096 rows on 2 shared cores) than computing.
  scores = np.einsum("bd,bcd->bc", np.asarray(queries_bd, np.float32), store.rows(ids))
  if bias_v is not None:
    scores = scores + np.asarray(bias_v, np.float32)[ids]
  scores = np.where(candidate_ids < 0, -np.inf, scores)
  # Ties go to the lowest id, as with argmax over the full vocabulary.
  order = np.lexsort((ids, -scores), axis=1)[:, :k]
  return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


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


def load_index(store: EmbeddingStore, directory: str | os.PathLike | None = None, verify_file: bool = True) -> AnnIndex:
  """Loads the index saved next to `store` (or in `directory`), refusing one for another vocabulary."""
  import faiss

  directory = Path(directory or store.path)
  meta_path, index_path = directory / _META_FILE, directory / _INDEX_FILE
  if not meta_path.is_file() or not index_path.is_file():
    raise IndexMismatchError(f"{directory}: no ANN index ({_INDEX_FILE} + {_META_FILE}); build one first")
  try:
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != _FORMAT_VERSION:
      raise IndexMismatchError(
        f"{meta_path}: index format {meta.get('format_version', 1)}, this zett reads "
        f"{_FORMAT_VERSION}; rebuild the index"
      )
    spec = IndexSpec(**meta["spec"])
    has_bias = bool(meta["has_bias"])
    band_shapes = [(int(rows), int(dim), float(share)) for rows, dim, share in meta["bands"]]
    parts = [(int(band), int(size)) for band, size in meta["parts"]]
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    if isinstance(e, IndexMismatchError):
      raise
    raise IndexMismatchError(f"{meta_path}: malformed index metadata ({e})") from None
  if meta["vocab_sha256"] != store.vocab_sha256:
    raise IndexMismatchError(
      f"{index_path}: built for vocabulary {meta['vocab_sha256'][:12]}..., but the store "
      f"{store.path} holds vocabulary {store.vocab_sha256[:12]}...; rebuild the index"
    )
  if (meta["vocab_size"], meta["dim"]) != (store.vocab_size, store.dim):
    raise IndexMismatchError(
      f"{index_path}: built for [{meta['vocab_size']}, {meta['dim']}], store is [{store.vocab_size}, {store.dim}]"
    )
  if verify_file and file_sha256(index_path) != meta["index_sha256"]:
    raise IndexMismatchError(f"{index_path}: file does not match its recorded sha256 (corrupt or replaced)")
  data = np.fromfile(index_path, dtype=np.uint8)
  if len(data) != sum(size for _, size in parts):
    raise IndexMismatchError(
      f"{index_path}: unreadable faiss index ({len(data)} bytes, its parts add up to {sum(size for _, size in parts)})"
    )
  shards: list[list] = [[] for _ in band_shapes]
  offset = 0
  for band, size in parts:
    try:
      shards[band].append(faiss.deserialize_index(data[offset : offset + size]))
    except RuntimeError as e:
      raise IndexMismatchError(f"{index_path}: unreadable faiss index ({str(e).strip().splitlines()[-1]})") from None
    offset += size
  rows = np.load(directory / _ROWS_FILE) if (directory / _ROWS_FILE).is_file() else None
  if rows is None or rows.shape != (store.vocab_size,):
    raise IndexMismatchError(f"{directory / _ROWS_FILE}: missing or not [{store.vocab_size}] row ids")
  bands, start = [], 0
  for (count, dim, share), band_shards in zip(band_shapes, shards):
    if sum(shard.ntotal for shard in band_shards) != count or any(shard.d != dim for shard in band_shards):
      raise IndexMismatchError(
        f"{index_path}: a band holds {sum(s.ntotal for s in band_shards)} vectors, its "
        f"metadata says {count} of width {dim}"
      )
    bands.append(_Band(rows[start : start + count], dim, share, band_shards))
    start += count
  if start != store.vocab_size:
    raise IndexMismatchError(f"{index_path}: holds {start} vectors, store has {store.vocab_size}")
  bias_v = None
  if has_bias:
    bias_v = np.load(directory / _BIAS_FILE)
    if bias_v.shape != (store.vocab_size,):
      raise IndexMismatchError(f"{directory / _BIAS_FILE}: shape {bias_v.shape}, expected ({store.vocab_size},)")
  query_scale = np.load(directory / _SCALE_FILE) if meta.get("has_query_scale") else None
  if query_scale is not None and query_scale.shape != (store.dim,):
    raise IndexMismatchError(f"{directory / _SCALE_FILE}: shape {query_scale.shape}, expected ({store.dim},)")
  index = AnnIndex(bands, store, spec, float(meta["max_norm"]), bias_v, query_scale)
  index.calibration = meta.get("calibration")
  return index


def exact_topk(
  store: EmbeddingStore, queries_bd: np.ndarray, k: int = 1, bias_v: np.ndarray | None = None, chunk_size: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force top-k over the whole store, a chunk at a time (the reference the index is held to)."""
  queries = np.asarray(queries_bd, dtype=np.float32).reshape(-1, store.dim)
  best_scores = np.full((len(queries), k), -np.inf, np.float32)
  best_ids = np.zeros((len(queries), k), np.int64)
  for start, rows in store.iter_chunks(chunk_size):
    scores = queries @ rows.T
    if bias_v is not None:
      scores += np.asarray(bias_v[start : start + len(rows)], np.float32)
    top = (
      np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
      if scores.shape[1] > k
      else np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    )
    merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
    merged_ids = np.concatenate([best_ids, top + start], axis=1)
    order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
    best_scores = np.take_along_axis(merged_scores, order, 1)
    best_ids = np.take_along_axis(merged_ids, order, 1)
  return best_scores, best_ids
