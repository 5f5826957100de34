"""zett installs one import name: `zett`. The checkout's hypernet/ and train/ folders install as zett.hypernet and
zett.train (pyproject's package-dir mapping), so a user's own `train.py` or `hypernet/` neither shadows ours nor is
shadowed. Checked on a real wheel installed into a fresh virtual environment, and on the package list itself."""

import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"zett": "zett", "hypernet": "zett.hypernet", "train": "zett.train"}


def _pyproject() -> dict:
  return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_its_installed_name():
  on_disk = set()
  for folder, name in FOLDERS.items():
    for init in (REPO / folder).rglob("__init__.py"):
      relative = init.parent.relative_to(REPO / folder).parts
      on_disk.add(".".join((name, *relative)))
  listed = set(_pyproject()["packages"])
  assert listed == on_disk, f"missing from pyproject: {on_disk - listed}; listed but absent: {listed - on_disk}"
  assert _pyproject()["package-dir"] == {"zett.hypernet": "hypernet", "zett.train": "train"}


def test_the_installed_package_is_the_mapped_one():
  import zett.hypernet
  import zett.train
  assert Path(zett.hypernet.__file__).parent == REPO / "hypernet"
  assert Path(zett.train.__file__).parent == REPO / "train"


@pytest.mark.slow
def test_a_wheel_exposes_only_zett(tmp_path):
  source = tmp_path / "source"  # a copy: building in place would leave build/ and *.egg-info in the checkout
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  for folder in FOLDERS:
    shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                  str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
  (wheel,) = (tmp_path / "dist").glob("zett-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert {n.split("/")[0] for n in names} == {"zett", wheel.name.split("-py")[0] + ".dist-info"}
  for module in ("zett/hypernet/model.py", "zett/train/loop.py", "zett/train/publish.py", "zett/cli/__init__.py", "zett/cli/transfer.py"):
    assert module in names
  assert any(n.startswith("zett/hypernets/") and n.endswith("hypernet.safetensors") for n in names)

  # A fresh environment: this one's site-packages supplies the dependencies (a path entry: the editable install's
  # finder in it is not activated), the wheel supplies zett.
  env = tmp_path / "env"
  venv.create(env, with_pip=True)
  site = next((env / "lib").glob("python3*/site-packages"))
  deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "jax").is_dir())
  (site / "dependencies.pth").write_text(f"{deps}\n")
  python = env / "bin" / "python"
  subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True, cwd=tmp_path)
  probe = ("import zett.hypernet, zett.train.loop, zett.cli\n"
           "print(zett.hypernet.__file__)\n"
           "for name in ('train', 'hypernet'):\n"
           "  try:\n"
           "    __import__(name)\n"
           "  except ModuleNotFoundError:\n"
           "    print('absent', name)\n")
  out = subprocess.run([python, "-c", probe], check=True, cwd=tmp_path, capture_output=True, text=True).stdout
  assert str(site / "zett" / "hypernet" / "__init__.py") in out
  assert "absent train" in out and "absent hypernet" in out
