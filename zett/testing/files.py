"""Damaging files on purpose, for tests of the checks that must catch it."""

from pathlib import Path


def flip_byte(path: str | Path, offset: int) -> None:
  """Inverts the byte at `offset` (negative counts from the end): the file keeps its size, its checksum changes."""
  path = Path(path)
  data = bytearray(path.read_bytes())
  data[offset] ^= 0xFF
  path.write_bytes(bytes(data))
