"""A GGUF file's header: its metadata keys and its tensor table, read straight from a memory map.

`gguf.GGUFReader` builds a numpy view for every part of every field on open, which for a 49k-token vocabulary
(tokens and merges: ~100k strings) takes seconds. Here each value is one `struct.unpack_from` or one slice, and no
tensor data is touched: only the pages of the header are read.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from zett.errors import ZettError

# GGUF metadata value types with a fixed width (struct format); 8 is a string, 9 an array.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)  # v1 counted in 32 bits; llama.cpp has written v3 since 2023
_DEFAULT_ALIGNMENT = 32


class GgufHeaderError(ZettError, ValueError):
  """The file is not a GGUF file, or its header is cut short or malformed."""


@dataclasses.dataclass(frozen=True)
class GgufTensorInfo:
  name: str
  shape: tuple[int, ...]
  """As numpy sees it (slowest dimension first: ggml lists dimensions the other way round)."""
  ggml_type: int
  offset: int
  """From the start of the file."""


@dataclasses.dataclass(frozen=True)
class GgufHeader:
  metadata: dict[str, Any]
  """Key -> value; arrays of numbers are numpy arrays, arrays of strings lists of `str`."""
  tensors: tuple[GgufTensorInfo, ...]


class _Cursor:
  def __init__(self, buffer, path: Path):
    self.buffer, self.position, self.path = buffer, 0, path

  def unpack(self, fmt: str) -> tuple:
    fmt = "<" + fmt
    try:
      values = struct.unpack_from(fmt, self.buffer, self.position)
    except struct.error:
      raise GgufHeaderError(f"{self.path}: the GGUF header is cut short at byte {self.position}") from None
    self.position += struct.calcsize(fmt)
    return values

  def string(self) -> str:
    (length,) = self.unpack("Q")
    end = self.position + length
    if end > len(self.buffer):
      raise GgufHeaderError(f"{self.path}: the GGUF header is cut short at byte {self.position}")
    raw = self.buffer[self.position : end]
    self.position = end
    return raw.decode("utf-8", errors="replace")

  def value(self, value_type: int) -> Any:
    if value_type in _SCALAR_FORMATS:
      return self.unpack(_SCALAR_FORMATS[value_type])[0]
    if value_type == _STRING:
      return self.string()
    if value_type == _ARRAY:
      item_type, count = self.unpack("IQ")
      if item_type == _STRING:
        return [self.string() for _ in range(count)]
      if item_type in _SCALAR_FORMATS:
        dtype = np.dtype("<" + _SCALAR_FORMATS[item_type])
        end = self.position + count * dtype.itemsize
        if end > len(self.buffer):
          raise GgufHeaderError(f"{self.path}: the GGUF header is cut short at byte {self.position}")
        array = np.frombuffer(self.buffer[self.position : end], dtype=dtype)
        self.position = end
        return array
      raise GgufHeaderError(f"{self.path}: GGUF array of unsupported item type {item_type}")
    raise GgufHeaderError(f"{self.path}: GGUF value of unknown type {value_type}")


def read_gguf_header(path: str | Path) -> GgufHeader:
  """The metadata and tensor table of a little-endian GGUF v2/v3 file.

  Raises:
    GgufHeaderError: not a GGUF file, an unsupported version, or a header cut short.
    OSError: the file cannot be opened.
  """
  path = Path(path)
  with open(path, "rb") as file:
    if path.stat().st_size < 24:
      raise GgufHeaderError(f"{path}: too short to be a GGUF file")
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
      cursor = _Cursor(buffer, path)
      (magic,) = cursor.unpack("4s")
      if magic != b"GGUF":
        raise GgufHeaderError(f"{path}: not a GGUF file (magic {magic!r})")
      version, tensor_count, key_count = cursor.unpack("IQQ")
      if version not in _VERSIONS:
        raise GgufHeaderError(f"{path}: GGUF version {version} is not supported (supported: {_VERSIONS})")
      metadata = {}
      for _ in range(key_count):
        key = cursor.string()
        (value_type,) = cursor.unpack("I")
        metadata[key] = cursor.value(value_type)
      table = []
      for _ in range(tensor_count):
        name = cursor.string()
        (dimension_count,) = cursor.unpack("I")
        dimensions = cursor.unpack(f"{dimension_count}Q")
        ggml_type, offset = cursor.unpack("IQ")
        table.append((name, tuple(reversed(dimensions)), ggml_type, offset))
  alignment = int(metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
  data_start = -(-cursor.position // alignment) * alignment
  tensors = tuple(GgufTensorInfo(name, shape, kind, data_start + offset) for name, shape, kind, offset in table)
  return GgufHeader(metadata, tensors)
