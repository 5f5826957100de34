"""A memory-mapped float16 embedding table on disk, filled chunk by chunk and resumable.

A store is a directory:

    embeddings.npy   float16 [V, D], a standard .npy file (readable with `np.load(mmap_mode="r")`)
    manifest.json    vocab size, dim, dtype, vocabulary sha256, chunk size, rows completed,
                     one sha256 per completed chunk

Building writes one chunk at a time through a short-lived memory map of just that chunk, so the
process never holds more than one chunk of the table (a 1M x 4096 table is 8 GB; mapping the
whole file for writing would keep every dirty page resident until the map goes away). The
manifest is rewritten atomically after each chunk lands, so a killed build resumes at the first
chunk it had not finished, after re-checking the chunks it had.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from zett.errors import ZettError

_FORMAT_VERSION = 1
_TABLE_FILE = "embeddings.npy"
_MANIFEST_FILE = "manifest.json"
_DTYPE = np.dtype("<f2")
_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint16).view(_DTYPE).astype(np.float32)


class StoreError(ZettError, ValueError):
  """A store that is missing, truncated, corrupt, or does not fit the request; names the path."""


def vocabulary_sha256(tokens: Iterable[bytes | str]) -> str:
  """Identifies a vocabulary by its tokens in id order (length-prefixed so no two lists collide)."""
  digest = hashlib.sha256()
  count = 0
  for token in tokens:
    data = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    digest.update(len(data).to_bytes(4, "little"))
    digest.update(data)
    count += 1
  digest.update(count.to_bytes(8, "little"))
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class StoreManifest:
  """What manifest.json records about a store."""

  vocab_size: int
  dim: int
  vocab_sha256: str
  chunk_size: int
  rows_completed: int = 0
  chunk_sha256: tuple[str, ...] = ()
  """sha256 of each completed chunk's float16 bytes, in row order."""
  dtype: str = "float16"
  format_version: int = _FORMAT_VERSION

  @property
  def complete(self) -> bool:
    return self.rows_completed == self.vocab_size

  @property
  def num_chunks(self) -> int:
    return -(-self.vocab_size // self.chunk_size)

  def chunk_range(self, chunk: int) -> tuple[int, int]:
    start = chunk * self.chunk_size
    return start, min(start + self.chunk_size, self.vocab_size)


def _write_manifest(directory: Path, manifest: StoreManifest) -> None:
  # Write-then-rename: a crash mid-write leaves the previous manifest, never half a file.
  tmp = directory / (_MANIFEST_FILE + ".tmp")
  data = dataclasses.asdict(manifest)
  data["chunk_sha256"] = list(manifest.chunk_sha256)
  tmp.write_text(json.dumps(data, indent=1))
  os.replace(tmp, directory / _MANIFEST_FILE)


def _read_manifest(directory: Path) -> StoreManifest:
  path = directory / _MANIFEST_FILE
  if not path.is_file():
    raise StoreError(f"{path}: no store manifest (not an embedding store, or its build never started)")
  try:
    data = json.loads(path.read_text())
    data["chunk_sha256"] = tuple(data["chunk_sha256"])
    manifest = StoreManifest(**data)
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise StoreError(f"{path}: malformed store manifest ({e})") from None
  if manifest.format_version != _FORMAT_VERSION or manifest.dtype != "float16":
    raise StoreError(f"{path}: unsupported store format {manifest.format_version}/{manifest.dtype}")
  if len(manifest.chunk_sha256) * manifest.chunk_size < manifest.rows_completed or not (
    0 <= manifest.rows_completed <= manifest.vocab_size
  ):
    raise StoreError(
      f"{path}: inconsistent manifest (rows_completed {manifest.rows_completed}, "
      f"{len(manifest.chunk_sha256)} chunk checksums)"
    )
  return manifest


def _header_size(vocab_size: int, dim: int) -> int:
  """Byte offset of the table in a .npy file of this shape (the header is padded to 64 bytes)."""
  import io

  buffer = io.BytesIO()
  np.lib.format.write_array_header_1_0(
    buffer, {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": (vocab_size, dim)}
  )
  return buffer.tell()


def _create_table_file(table_path: Path, vocab_size: int, dim: int) -> None:
  """Writes the .npy header and sizes the file (sparse: no data pages yet, nothing mapped)."""
  with open(table_path, "wb") as f:
    np.lib.format.write_array_header_1_0(
      f, {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": (vocab_size, dim)}
    )
    f.truncate(_header_size(vocab_size, dim) + vocab_size * dim * _DTYPE.itemsize)


def _map_rows(table_path: Path, manifest: StoreManifest, start: int, stop: int, mode: Literal["r", "r+"]) -> np.memmap:
  """Maps rows [start, stop) only, so a chunk's pages leave the process when the map is dropped."""
  offset = _header_size(manifest.vocab_size, manifest.dim) + start * manifest.dim * _DTYPE.itemsize
  return np.memmap(table_path, dtype=_DTYPE, mode=mode, offset=offset, shape=(stop - start, manifest.dim))


def _chunk_digest(rows: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(rows).data).hexdigest()


def _check_table_file(directory: Path, manifest: StoreManifest) -> Path:
  table_path = directory / _TABLE_FILE
  if not table_path.is_file():
    raise StoreError(f"{table_path}: embedding table missing")
  expected = _header_size(manifest.vocab_size, manifest.dim) + manifest.vocab_size * manifest.dim * 2
  actual = table_path.stat().st_size
  if actual != expected:
    raise StoreError(
      f"{table_path}: truncated or wrong size ({actual} bytes, expected {expected} for "
      f"[{manifest.vocab_size}, {manifest.dim}] float16)"
    )
  return table_path


def _verify_chunks(directory: Path, manifest: StoreManifest, table_path: Path, num_chunks: int) -> None:
  for chunk in range(num_chunks):
    start, stop = manifest.chunk_range(chunk)
    rows = _map_rows(table_path, manifest, start, stop, "r")
    if _chunk_digest(rows) != manifest.chunk_sha256[chunk]:
      raise StoreError(
        f"{table_path}: rows {start}..{stop} do not match their checksum in "
        f"{directory / _MANIFEST_FILE} (corrupt store; delete it and rebuild)"
      )
    del rows


class EmbeddingStore:
  """A completed store, opened read-only as a memory map (pages load on demand).

  Attributes:
    path: the store directory.
    manifest: its StoreManifest.
    table: np.memmap float16 [V, D] (mapped lazily).
  """

  def __init__(self, path: str | os.PathLike, verify: bool = False):
    self.path = Path(path)
    self.manifest = _read_manifest(self.path)
    table_path = _check_table_file(self.path, self.manifest)
    if not self.manifest.complete:
      raise StoreError(
        f"{self.path}: incomplete store ({self.manifest.rows_completed} of "
        f"{self.manifest.vocab_size} rows); rerun the build to resume it"
      )
    if verify:
      _verify_chunks(self.path, self.manifest, table_path, self.manifest.num_chunks)
    self._table_path = table_path

  @functools.cached_property
  def table(self) -> np.ndarray:
    """np.memmap float16 [V, D], mapped on first use (address space only; pages load on demand)."""
    try:
      table = np.load(self._table_path, mmap_mode="r")
    except ValueError as e:
      raise StoreError(f"{self._table_path}: not a readable .npy file ({e})") from None
    if table.shape != (self.manifest.vocab_size, self.manifest.dim) or table.dtype != _DTYPE:
      raise StoreError(
        f"{self._table_path}: holds {table.dtype} {table.shape}, manifest says "
        f"float16 [{self.manifest.vocab_size}, {self.manifest.dim}]"
      )
    return table

  @property
  def vocab_size(self) -> int:
    return self.manifest.vocab_size

  @property
  def dim(self) -> int:
    return self.manifest.dim

  @property
  def vocab_sha256(self) -> str:
    return self.manifest.vocab_sha256

  def iter_chunks(self, chunk_size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start, float32 rows) in order, one chunk in memory at a time."""
    chunk_size = chunk_size or self.manifest.chunk_size
    for start in range(0, self.vocab_size, chunk_size):
      yield start, np.asarray(self.table[start : start + chunk_size], dtype=np.float32)

  def rows(self, ids: np.ndarray) -> np.ndarray:
    """float32 [..., D] rows for integer ids of any shape."""
    ids = np.asarray(ids)
    # A 65,536-entry table converts float16 to float32 twice as fast as numpy's cast (the
    # candidates' conversion is a third of exact rescoring), bit-identical.
    return np.take(_HALF_TO_FLOAT, self.table[ids.reshape(-1)].view(np.uint16)).reshape(*ids.shape, self.dim)


def build_store(
  path: str | os.PathLike,
  vocab_size: int,
  dim: int,
  embed_fn: Callable[[range], np.ndarray],
  vocab_sha256: str,
  chunk_size: int = 8192,
  progress: bool = True,
  description: str = "embedding",
) -> EmbeddingStore:
  """Creates (or resumes) a store by calling `embed_fn` on consecutive token ranges.

  Args:
    path: store directory (created if missing).
    vocab_size, dim: table shape [V, D].
    embed_fn: range of token ids -> array [len(range), D] (any float dtype; stored as float16).
    vocab_sha256: `vocabulary_sha256` of the vocabulary the rows belong to; a store started for
      another vocabulary (or shape, or chunk size) is refused rather than silently mixed.
    chunk_size: rows per call and per checksum.
    progress: show a tqdm progress bar.

  Returns:
    The completed EmbeddingStore. Completed chunks of an interrupted build are verified against
    their checksums and kept; building resumes at the first missing chunk.
  """
  from tqdm.auto import tqdm

  directory = Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  table_path = directory / _TABLE_FILE
  wanted = StoreManifest(vocab_size=vocab_size, dim=dim, vocab_sha256=vocab_sha256, chunk_size=chunk_size)
  if (directory / _MANIFEST_FILE).exists():
    manifest = _read_manifest(directory)
    for field in ("vocab_size", "dim", "vocab_sha256", "chunk_size"):
      if getattr(manifest, field) != getattr(wanted, field):
        raise StoreError(
          f"{directory}: existing store has {field}={getattr(manifest, field)!r}, this build "
          f"wants {getattr(wanted, field)!r}; use another directory or delete it"
        )
    _check_table_file(directory, manifest)
    done_chunks = manifest.rows_completed // chunk_size if not manifest.complete else manifest.num_chunks
    _verify_chunks(directory, manifest, table_path, done_chunks)
  else:
    manifest = wanted
    _create_table_file(table_path, vocab_size, dim)
    _write_manifest(directory, manifest)
    done_chunks = 0

  with tqdm(
    total=vocab_size,
    initial=min(done_chunks * chunk_size, vocab_size),
    unit="tok",
    desc=description,
    disable=not progress,
  ) as bar:
    for chunk in range(done_chunks, manifest.num_chunks):
      start, stop = manifest.chunk_range(chunk)
      rows = np.asarray(embed_fn(range(start, stop)))
      if rows.shape != (stop - start, dim):
        raise ValueError(
          f"embed_fn returned shape {rows.shape} for tokens {start}..{stop}, expected {(stop - start, dim)}"
        )
      rows = rows.astype(_DTYPE)
      if not np.isfinite(rows).all():
        raise ValueError(f"embed_fn returned non-finite values (or values beyond float16) for tokens {start}..{stop}")
      mapped = _map_rows(table_path, manifest, start, stop, "r+")
      mapped[:] = rows
      mapped.flush()
      del mapped
      manifest = dataclasses.replace(
        manifest, rows_completed=stop, chunk_sha256=manifest.chunk_sha256[:chunk] + (_chunk_digest(rows),)
      )
      _write_manifest(directory, manifest)
      bar.update(stop - start)
  return EmbeddingStore(directory)


def store_exists(path: str | os.PathLike) -> bool:
  """True when `path` holds a completed store."""
  try:
    return _read_manifest(Path(path)).complete
  except StoreError:
    return False
