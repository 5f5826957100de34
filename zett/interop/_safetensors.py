"""Minimal safetensors reader/writer on numpy (bfloat16 via ml_dtypes), with file-naming errors.

Written here rather than via `safetensors.numpy` because that cannot hold bfloat16 and its errors
on truncated files do not name the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from zett.models.family import ModelLoadError

_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER_BYTES = 100 << 20


class SafetensorsFile(Mapping[str, np.ndarray]):
  """Read-only view of one .safetensors file: header checked on open, tensors memory-mapped on access."""

  def __init__(self, path: str | Path):
    self.path = Path(path)
    try:
      size = self.path.stat().st_size
      with open(self.path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
          raise ModelLoadError(f"{self.path}: truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
          raise ModelLoadError(f"{self.path}: corrupt or truncated safetensors header (length {header_len})")
        header = json.loads(f.read(header_len))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ModelLoadError(f"{self.path}: cannot read safetensors header: {e}") from e
    self.metadata = header.pop("__metadata__", None) or {}
    self._data_start = 8 + header_len
    self._entries = header
    for name, entry in header.items():
      try:
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        expected = int(np.prod(entry["shape"], dtype=np.int64)) * dtype.itemsize
      except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{self.path}: bad header entry for tensor {name!r}: {entry}") from e
      if end - begin != expected:
        raise ModelLoadError(f"{self.path}: tensor {name!r} byte range {end - begin} != shape x dtype {expected}")
      if self._data_start + end > size:
        raise ModelLoadError(
          f"{self.path}: truncated file: tensor {name!r} ends at byte {self._data_start + end}, file has {size}"
        )
    self._mmap = None

  def __getitem__(self, name: str) -> np.ndarray:
    entry = self._entries[name]
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    begin, end = entry["data_offsets"]
    raw = self._mmap[self._data_start + begin : self._data_start + end]
    return raw.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)


class ShardedTensors(Mapping[str, np.ndarray]):
  """All tensors of a checkpoint spread over several files (name -> file from an index)."""

  def __init__(self, files: Mapping[str, SafetensorsFile]):
    self._where = {name: f for f in files.values() for name in f}
    self.files = files

  def __getitem__(self, name: str) -> np.ndarray:
    return self._where[name][name]

  def file_of(self, name: str) -> Path:
    return self._where[name].path

  def __iter__(self):
    return iter(self._where)

  def __len__(self):
    return len(self._where)


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None):
  """Writes tensors in file order given; the header is padded to 8 bytes as the format recommends."""
  header, offset, arrays = {}, 0, []
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype not in _NAMES:
      raise ValueError(f"cannot write tensor {name!r} of dtype {array.dtype} to safetensors")
    header[name] = {
      "dtype": _NAMES[array.dtype],
      "shape": list(array.shape),
      "data_offsets": [offset, offset + array.nbytes],
    }
    offset += array.nbytes
    arrays.append(array)
  header["__metadata__"] = dict(metadata or {"format": "pt"})
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for array in arrays:
      f.write(array.tobytes())
