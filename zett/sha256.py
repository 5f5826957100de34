"""sha256 of files, read in blocks (weights files run to gigabytes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(paths: str | Path | Iterable[str | Path]) -> str:
  """sha256 (hex) over the bytes of one file, or of several concatenated in the given order."""
  digest = hashlib.sha256()
  for p in [paths] if isinstance(paths, (str, Path)) else paths:
    with open(p, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  return digest.hexdigest()
