"""Folders written whole or not at all: build in a hidden sibling, then rename into place.

A staging sibling is named `.NAME.PID.RANDOM.staging` after the process writing it. A process killed
mid-write (SIGKILL, or SIGTERM with Python's default handler) cannot clean up, so the next write of the same
folder removes the staging siblings whose process is gone; those of live processes (a concurrent writer) stay.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path

_SUFFIX = ".staging"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def remove_stale_staging(out: str | os.PathLike) -> list[Path]:
  """Removes staging siblings of `out` left by processes that no longer run; returns what it removed."""
  out = Path(out)
  removed = []
  prefix = f".{out.name}."
  for candidate in out.parent.glob(f"{glob.escape(prefix)}*{_SUFFIX}"):
    pid = candidate.name[len(prefix) :].split(".", 1)[0]
    if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
      shutil.rmtree(candidate, ignore_errors=True)
      removed.append(candidate)
  return removed


def new_staging_folder(out: str | os.PathLike) -> Path:
  """An empty hidden sibling of `out` to build it in (stale ones of dead processes are removed first)."""
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_staging(out)
  return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=_SUFFIX, dir=out.parent))


def _umask() -> int:
  # Read, not set-and-restore: os.umask(0) would briefly apply to every thread (the service exports in workers).
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith("Umask:"):
        return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return 0o022


def replace_folder(src: Path, dst: Path) -> None:
  """Moves folder `src` to `dst`, replacing what is there with two renames (never a half-written `dst`).

  `src` gets the permissions of a folder made with mkdir (mkdtemp makes staging folders 0700).
  """
  src, dst = Path(src), Path(dst)
  src.chmod(0o777 & ~_umask())
  if dst.exists():
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.old.", suffix=_SUFFIX, dir=dst.parent))
    os.rename(dst, old / dst.name)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(src, dst)
