"""Every error class of zett, hypernet and train derives from `zett.errors.ZettError` (the CLI prints those as one
line; anything else is a bug and keeps its traceback)."""

from __future__ import annotations

import ast
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("zett", "hypernet", "train")


def _error_classes() -> dict[str, tuple[str, list[str]]]:
  """class name -> (file, base names) for every class named `*Error` in the packages."""
  found = {}
  for package in _PACKAGES:
    for path in sorted((_ROOT / package).rglob("*.py")):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
          bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b).split(".")[-1] for b in node.bases]
          found[node.name] = (str(path.relative_to(_ROOT)), bases)
  return found


def test_every_error_class_derives_from_zett_error():
  classes = _error_classes()
  assert len(classes) > 30  # the scan found the packages

  def derives(name: str, seen=()) -> bool:
    if name == "ZettError":
      return True
    if name not in classes or name in seen:
      return False
    return any(derives(base, (*seen, name)) for base in classes[name][1])

  strays = sorted(f"{path}: {name}" for name, (path, _) in classes.items() if not derives(name))
  assert not strays, f"error classes outside the ZettError tree: {strays}"


def test_subclasses_keep_their_builtin_base():
  # Callers catch the builtin (`except ValueError`, `except FileNotFoundError`); the root must not take it away.
  from zett.assets import MissingAssetError
  from zett.config import ConfigError
  from zett.errors import UsageError, ZettError
  assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, ZettError)
  assert issubclass(UsageError, ValueError) and issubclass(UsageError, ZettError)
  assert issubclass(MissingAssetError, FileNotFoundError) and issubclass(MissingAssetError, ZettError)
  assert not issubclass(ZettError, ValueError)
