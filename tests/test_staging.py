"""Whole-or-nothing folders (`zett.staging`): stale staging siblings of dead writers go, live writers' stay."""

import os
import subprocess
import sys

from zett.staging import new_staging_folder, remove_stale_staging, replace_folder


def test_only_staging_folders_of_dead_processes_are_removed(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  dead_pid = int(dead.stdout)
  stale = tmp_path / f".out.{dead_pid}.abc.staging"
  live = tmp_path / f".out.{os.getppid()}.abc.staging"  # our parent runs
  other = tmp_path / f".other.{dead_pid}.abc.staging"  # another folder's
  for folder in (stale, live, other):
    (folder / "model").mkdir(parents=True)
  assert remove_stale_staging(tmp_path / "out") == [stale]
  assert not stale.exists() and live.exists() and other.exists()


def test_a_published_folder_has_mkdir_permissions_and_replaces_the_old_one(tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "old.txt").write_text("old")
  staging = new_staging_folder(tmp_path / "out")
  (staging / "new.txt").write_text("new")
  replace_folder(staging, tmp_path / "out")
  umask = os.umask(0)
  os.umask(umask)
  assert [p.name for p in tmp_path.iterdir()] == ["out"]
  assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]
  assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
