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

This module owns the built index (search, exact rescoring, save and load); `IndexSpec` and the band
layout are in `zett.ann.index_spec`, building and the layout measurement in `zett.ann.index_build`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zett.ann.index_spec import IndexSpec
from zett.ann.store import EmbeddingStore
from zett.errors import ZettError
from zett.sha256 import file_sha256

_FORMAT_VERSION = 3
_INDEX_FILE = "index.faiss"
_META_FILE = "index.json"
_ROWS_FILE = "index_rows.npy"
_BIAS_FILE = "index_bias.npy"
_SCALE_FILE = "index_query_scale.npy"


class IndexMismatchError(ZettError, ValueError):
  """An index that is missing, corrupt, or belongs to a different vocabulary; names the file."""


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
    """Writes index.faiss + index.json + index_rows.npy (+ bias / query scale .npy) into `directory`.

    The folder is usually the store's own, so the index's files are replaced one by one, not the folder: index.json
    (what `load_index` looks for) goes first and comes back last, so a save cut short leaves no index at all, and a
    bias or query scale an earlier index left there is removed when this one has none.
    """
    import faiss

    directory = Path(directory or self.store.path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _META_FILE).unlink(missing_ok=True)
    parts = []

    def write_shards(f) -> None:
      for number, band in enumerate(self.bands):
        for shard in band.shards:
          data = faiss.serialize_index(shard)
          f.write(data.tobytes())
          parts.append([number, len(data)])

    index_path = _write_replacing(directory / _INDEX_FILE, write_shards)
    rows = np.concatenate([band.rows for band in self.bands])
    _write_replacing(directory / _ROWS_FILE, lambda f: np.save(f, rows))
    for name, array in ((_BIAS_FILE, self.bias_v), (_SCALE_FILE, self.query_scale)):
      if array is None:
        (directory / name).unlink(missing_ok=True)
      else:
        _write_replacing(directory / name, lambda f, array=array: np.save(f, array))
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
    _write_replacing(directory / _META_FILE, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return directory


def _write_replacing(path: Path, write) -> Path:
  """`write(binary file)` into a temporary sibling, then renamed over `path`: never half a file under its name."""
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(temporary, "wb") as f:
      write(f)
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)
  return path


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
