"""Maximum-inner-product search over a store's output embeddings, then exact rescoring.

Next-token logits are inner products `h . e_v (+ b_v)`, not cosines: a long embedding wins even
when its direction is a little off. Every index kind here ranks by inner product: faiss's
inner-product metric (product quantization, HNSW, IVF), or for "hnsw-l2" the classic MIPS-to-L2
reduction (append `sqrt(M^2 - |e|^2)` to each row and 0 to each query, so L2-nearest == max inner
product). An output bias is folded in exactly as one more column: `[e, b] . [h, 1] = h . e + b`.

Chosen by measurement on real SmolLM2 hidden states (bench/million_vocab.py): the default is an
exhaustive 4-bit product-quantized scan ("fast scan", one code per dimension), with vectors scaled
per dimension by the hidden states' RMS (`query_scale_from`). Graph indexes (faiss HNSW, hnswlib,
usearch) and IVF reach only ~0.6-0.75 recall@1 there at useful speeds: LM hidden states are far
out of the embeddings' distribution (one "massive" dimension carries most of the logit variance),
so graph walks and coarse quantizers built from the embeddings alone steer to the wrong region.
A compressed exhaustive scan cannot miss a region, and scaling puts its precision where queries
look. The index only proposes candidates; the final top-k is rescored exactly from the store
(with the bias), so the codes may be lossy without biasing the chosen token.

An index is saved as `<dir>/index.faiss` + `<dir>/index.json` (+ `index_bias.npy`,
`index_query_scale.npy`); the JSON records the store's vocabulary sha256 and shape, and loading
refuses an index built for another vocabulary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from zett.ann.store import EmbeddingStore

_INDEX_FILE = "index.faiss"
_META_FILE = "index.json"
_BIAS_FILE = "index_bias.npy"
_SCALE_FILE = "index_query_scale.npy"


class IndexMismatchError(ValueError):
  """An index that is missing, corrupt, or belongs to a different vocabulary; names the file."""


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """How to build the index. Defaults are the configuration chosen in bench/million_vocab.py."""

  kind: str = "pq"
  """"pq" (exhaustive 4-bit product-quantized scan, SIMD "fast scan", inner product),
  "hnsw" (graph, inner product), "hnsw-l2" (graph, L2 over norm-augmented vectors),
  "ivf" (inverted lists, inner product) or "flat" (exact, for reference)."""
  storage: str = "SQfp16"
  """faiss vector codec inside hnsw/ivf indexes: "Flat" (float32), "SQfp16", "SQ8"."""
  pq_dims_per_code: int = 1
  """"pq": dimensions per 4-bit code (1 -> D codes, D/2 bytes per vector). Measured at 1M x 576
  on SmolLM2 states, 1024 candidates: 1 -> recall@1 0.987 at 24 ms, 2 -> 0.913 at 13 ms."""
  hnsw_neighbors: int = 32
  hnsw_ef_construction: int = 100
  hnsw_ef_search: int = 256
  ivf_lists: int = 0
  """0 = about 4 * sqrt(V)."""
  ivf_probe: int = 32
  candidates: int = 1024
  """Candidates fetched per query and rescored exactly (1024: recall@1 0.997 on SmolLM2 hidden
  states with the default "pq" index, vs 0.976 at 256; rescoring 1024 rows costs ~1 ms)."""

  def __post_init__(self):
    if self.kind not in ("pq", "hnsw", "hnsw-l2", "ivf", "flat"):
      raise ValueError(f"IndexSpec.kind must be pq, hnsw, hnsw-l2, ivf or flat, got {self.kind!r}")
    if self.storage not in ("Flat", "SQfp16", "SQ8"):
      raise ValueError(f"IndexSpec.storage must be Flat, SQfp16 or SQ8, got {self.storage!r}")


def _pq_dims_per_code(spec: IndexSpec, dim: int) -> int:
  return spec.pq_dims_per_code


def _index_dim(spec: IndexSpec, dim: int, has_bias: bool) -> int:
  per_code = _pq_dims_per_code(spec, dim)
  dim += has_bias + (spec.kind == "hnsw-l2")
  if spec.kind == "pq":
    dim = -(-dim // per_code) * per_code
  return dim


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
  return (rms / np.sqrt(np.mean(rms ** 2))).astype(np.float32)


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


class _Transform:
  """Maps store rows and queries into the index's space so that index scores rank by `h . e + b`."""

  def __init__(self, spec: IndexSpec, dim: int, bias_v, query_scale, max_norm: float):
    self.spec, self.dim, self.bias_v, self.max_norm = spec, dim, bias_v, max_norm
    self.query_scale = np.ones(dim, np.float32) if query_scale is None else np.asarray(query_scale, np.float32)
    self.index_dim = _index_dim(spec, dim, bias_v is not None)

  def rows(self, start: int, rows_nd: np.ndarray, with_norm: bool = True) -> np.ndarray:
    columns = [rows_nd * self.query_scale]
    if self.bias_v is not None:
      columns.append(self.bias_v[start:start + len(rows_nd), None])
    if self.spec.kind == "hnsw-l2" and with_norm:
      partial = np.concatenate(columns, axis=1)
      columns.append(np.sqrt(np.maximum(self.max_norm ** 2 - np.einsum("nd,nd->n", partial, partial), 0.0))[:, None])
    return self._pad(np.concatenate(columns, axis=1))

  def rows_at(self, ids: np.ndarray, rows_nd: np.ndarray) -> np.ndarray:
    columns = [rows_nd * self.query_scale]
    if self.bias_v is not None:
      columns.append(self.bias_v[ids, None])
    return np.concatenate(columns, axis=1)

  def queries(self, queries_bd: np.ndarray) -> np.ndarray:
    queries = np.asarray(queries_bd, np.float32).reshape(-1, self.dim)
    columns = [queries / self.query_scale]
    if self.bias_v is not None:
      columns.append(np.ones((len(queries), 1), np.float32))
    if self.spec.kind == "hnsw-l2":
      columns.append(np.zeros((len(queries), 1), np.float32))
    return self._pad(np.concatenate(columns, axis=1))

  def _pad(self, x: np.ndarray) -> np.ndarray:
    if x.shape[1] < self.index_dim:
      x = np.pad(x, ((0, 0), (0, self.index_dim - x.shape[1])))
    return np.ascontiguousarray(x, dtype=np.float32)


class AnnIndex:
  """A faiss index over an EmbeddingStore, answering exact-rescored maximum-inner-product top-k.

  Attributes:
    faiss_index: the faiss index over transformed rows (scaled by `query_scale`, plus a bias
      column when `bias_v` is set, plus the norm-completing column for "hnsw-l2").
    store: the EmbeddingStore the ids index.
    spec: the IndexSpec it was built with.
    bias_v: float32 [V] output bias folded into the index and the rescoring, or None.
    query_scale: float32 [D] per-dimension scale (see `query_scale_from`), or None.
    max_norm: largest transformed row norm, used by "hnsw-l2".
  """

  def __init__(self, faiss_index, store: EmbeddingStore, spec: IndexSpec, max_norm: float,
               bias_v: np.ndarray | None = None, query_scale: np.ndarray | None = None):
    self.faiss_index = faiss_index
    self.store = store
    self.spec = spec
    self.max_norm = max_norm
    self.bias_v = None if bias_v is None else np.asarray(bias_v, np.float32)
    self.query_scale = None if query_scale is None else np.asarray(query_scale, np.float32)
    self._transform = _Transform(spec, store.dim, self.bias_v, self.query_scale, max_norm)
    self.set_search_effort()

  def set_search_effort(self, hnsw_ef_search: int | None = None, ivf_probe: int | None = None) -> None:
    """Trades speed for recall at query time (no rebuild)."""
    import faiss
    self.spec = dataclasses.replace(self.spec, hnsw_ef_search=hnsw_ef_search or self.spec.hnsw_ef_search,
                                    ivf_probe=ivf_probe or self.spec.ivf_probe)
    if self.spec.kind.startswith("hnsw"):
      faiss.downcast_index(self.faiss_index).hnsw.efSearch = self.spec.hnsw_ef_search
    elif self.spec.kind == "ivf":
      faiss.extract_index_ivf(self.faiss_index).nprobe = self.spec.ivf_probe

  def candidates(self, queries_bd: np.ndarray, count: int | None = None) -> np.ndarray:
    """Candidate ids int64 [B, count] (approximate; -1 where the index found fewer)."""
    _, ids = self.faiss_index.search(self._transform.queries(queries_bd), count or self.spec.candidates)
    return ids

  def topk(self, queries_bd: np.ndarray, k: int = 1, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores and ids [B, k] of the best candidates by `q . e (+ bias)`, best first."""
    queries = np.asarray(queries_bd, dtype=np.float32).reshape(-1, self.store.dim)
    ids = self.candidates(queries, max(k, candidates or self.spec.candidates))
    return rescore(self.store, queries, ids, k, self.bias_v)

  def save(self, directory: str | os.PathLike | None = None) -> Path:
    """Writes index.faiss + index.json (+ bias / query scale .npy) into `directory` (default: the store's)."""
    import faiss
    directory = Path(directory or self.store.path)
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / _INDEX_FILE
    faiss.write_index(self.faiss_index, str(index_path))
    if self.bias_v is not None:
      np.save(directory / _BIAS_FILE, self.bias_v)
    if self.query_scale is not None:
      np.save(directory / _SCALE_FILE, self.query_scale)
    meta = {"vocab_sha256": self.store.vocab_sha256, "vocab_size": self.store.vocab_size,
            "dim": self.store.dim, "max_norm": self.max_norm, "spec": dataclasses.asdict(self.spec),
            "has_bias": self.bias_v is not None, "has_query_scale": self.query_scale is not None,
            "index_sha256": _file_sha256(index_path), "faiss_version": faiss.__version__}
    (directory / _META_FILE).write_text(json.dumps(meta, indent=1))
    return directory


def rescore(store: EmbeddingStore, queries_bd: np.ndarray, candidate_ids: np.ndarray, k: int,
            bias_v: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Exact `q . e (+ bias)` over each query's candidates; returns (scores, ids) [B, k], best first."""
  ids = np.where(candidate_ids < 0, 0, candidate_ids)
  scores = np.einsum("bd,bcd->bc", np.asarray(queries_bd, np.float32), store.rows(ids))
  if bias_v is not None:
    scores = scores + np.asarray(bias_v, np.float32)[ids]
  scores = np.where(candidate_ids < 0, -np.inf, scores)
  # Ties go to the lowest id, as with argmax over the full vocabulary.
  order = np.lexsort((ids, -scores), axis=1)[:, :k]
  return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def build_index(store: EmbeddingStore, spec: IndexSpec = IndexSpec(), bias_v: np.ndarray | None = None,
                query_sample: np.ndarray | None = None, progress: bool = True, train_sample: int = 65_536,
                seed: int = 0) -> AnnIndex:
  """Builds an index over every row of `store` (and its output bias), reading one chunk at a time.

  Args:
    bias_v: output bias [V] (folded in as one more column), or None.
    query_sample: sample hidden states [N, D] of the base model; their per-dimension scale weights
      the index (see `query_scale_from`). None: unweighted.
    train_sample: rows used to train quantizers (pq, ivf).
  """
  import faiss
  from tqdm.auto import tqdm

  if bias_v is not None:
    bias_v = np.asarray(bias_v, np.float32)
    if bias_v.shape != (store.vocab_size,):
      raise ValueError(f"bias has shape {bias_v.shape}, store {store.path} has {store.vocab_size} rows")
  query_scale = None if query_sample is None else query_scale_from(query_sample)
  if query_scale is not None and query_scale.shape != (store.dim,):
    raise ValueError(f"query sample has width {query_scale.shape[0]}, store {store.path} has {store.dim}")
  transform = _Transform(spec, store.dim, bias_v, query_scale, 0.0)
  max_norm = 0.0
  if spec.kind == "hnsw-l2":
    for start, rows in store.iter_chunks():
      rows = transform.rows(start, rows, with_norm=False)
      max_norm = max(max_norm, float(np.sqrt(np.einsum("nd,nd->n", rows, rows).max())))
    transform.max_norm = max_norm

  factory, metric = _factory(spec, transform.index_dim, _pq_dims_per_code(spec, store.dim), store.vocab_size)
  index = faiss.index_factory(transform.index_dim, factory, metric)
  if spec.kind.startswith("hnsw"):
    faiss.downcast_index(index).hnsw.efConstruction = spec.hnsw_ef_construction
  if not index.is_trained:
    rng = np.random.default_rng(seed)
    sample_ids = np.sort(rng.choice(store.vocab_size, min(train_sample, store.vocab_size), replace=False))
    sample = transform.rows_at(sample_ids, store.rows(sample_ids))
    index.train(transform._pad(sample))
  with tqdm(total=store.vocab_size, unit="tok", desc="index", disable=not progress) as bar:
    for start, rows in store.iter_chunks(max(store.manifest.chunk_size, 16384)):
      index.add(transform.rows(start, rows))
      bar.update(len(rows))
  return AnnIndex(index, store, spec, max_norm, bias_v, query_scale)


def load_index(store: EmbeddingStore, directory: str | os.PathLike | None = None,
               verify_file: bool = True) -> AnnIndex:
  """Loads the index saved next to `store` (or in `directory`), refusing one for another vocabulary."""
  import faiss
  directory = Path(directory or store.path)
  meta_path, index_path = directory / _META_FILE, directory / _INDEX_FILE
  if not meta_path.is_file() or not index_path.is_file():
    raise IndexMismatchError(f"{directory}: no ANN index ({_INDEX_FILE} + {_META_FILE}); build one first")
  try:
    meta = json.loads(meta_path.read_text())
    spec = IndexSpec(**meta["spec"])
    has_bias = bool(meta["has_bias"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise IndexMismatchError(f"{meta_path}: malformed index metadata ({e})") from None
  if meta["vocab_sha256"] != store.vocab_sha256:
    raise IndexMismatchError(f"{index_path}: built for vocabulary {meta['vocab_sha256'][:12]}..., but the store "
                             f"{store.path} holds vocabulary {store.vocab_sha256[:12]}...; rebuild the index")
  if (meta["vocab_size"], meta["dim"]) != (store.vocab_size, store.dim):
    raise IndexMismatchError(f"{index_path}: built for [{meta['vocab_size']}, {meta['dim']}], store is "
                             f"[{store.vocab_size}, {store.dim}]")
  if verify_file and _file_sha256(index_path) != meta["index_sha256"]:
    raise IndexMismatchError(f"{index_path}: file does not match its recorded sha256 (corrupt or replaced)")
  try:
    index = faiss.read_index(str(index_path))
  except RuntimeError as e:
    raise IndexMismatchError(f"{index_path}: unreadable faiss index ({str(e).strip().splitlines()[-1]})") from None
  if index.ntotal != store.vocab_size:
    raise IndexMismatchError(f"{index_path}: holds {index.ntotal} vectors, store has {store.vocab_size}")
  bias_v = None
  if has_bias:
    bias_v = np.load(directory / _BIAS_FILE)
    if bias_v.shape != (store.vocab_size,):
      raise IndexMismatchError(f"{directory / _BIAS_FILE}: shape {bias_v.shape}, expected ({store.vocab_size},)")
  query_scale = np.load(directory / _SCALE_FILE) if meta.get("has_query_scale") else None
  if query_scale is not None and query_scale.shape != (store.dim,):
    raise IndexMismatchError(f"{directory / _SCALE_FILE}: shape {query_scale.shape}, expected ({store.dim},)")
  return AnnIndex(index, store, spec, float(meta["max_norm"]), bias_v, query_scale)


def exact_topk(store: EmbeddingStore, queries_bd: np.ndarray, k: int = 1, bias_v: np.ndarray | None = None,
               chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force top-k over the whole store, a chunk at a time (the reference the index is held to)."""
  queries = np.asarray(queries_bd, dtype=np.float32).reshape(-1, store.dim)
  best_scores = np.full((len(queries), k), -np.inf, np.float32)
  best_ids = np.zeros((len(queries), k), np.int64)
  for start, rows in store.iter_chunks(chunk_size):
    scores = queries @ rows.T
    if bias_v is not None:
      scores += np.asarray(bias_v[start:start + len(rows)], np.float32)
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k] if scores.shape[1] > k else \
        np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
    merged_ids = np.concatenate([best_ids, top + start], axis=1)
    order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
    best_scores = np.take_along_axis(merged_scores, order, 1)
    best_ids = np.take_along_axis(merged_ids, order, 1)
  return best_scores, best_ids
