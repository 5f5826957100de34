"""Loading the ZeTT authors' published hypernetworks from a local folder or a hub name.

A published folder (hub repos `benjamin/zett-hypernetwork-*`) holds `config.json` (`model_type:
zett_hypernetwork`), the weights as `model.safetensors` (their PyTorch port's names) and/or `flax_model.msgpack`
(their Flax tree), and the base tokenizer converted to byte level (`tokenizer.json`, its ids beyond the base
vocabulary are the `hn_n_extra_tokens` fallback rows). Either weights file gives the same parameters, in the Flax
layout `hypernet.published_model` reads. safetensors is preferred when both are present (no code runs on load).

A spec may end in `@LANG` to pick the language of a language-id hypernetwork
(`benjamin/zett-hypernetwork-xlm-roberta-base@en`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from zett.hypernet.published_config import (
  PublishedConfigError,
  PublishedHypernetConfig,
  is_published_config,
  parse_published_config,
)

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
MSGPACK_NAME = "flax_model.msgpack"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# Stored but never read by the forward pass. Flax: their body always creates the inter-token attention blocks (used
# only with hn_add_inter_token_attention, which is off). PyTorch: RobertaModel allocates a word-embedding table of
# pad_token_id + 1 rows although inputs are always embeddings, and older transformers saved the position-id buffers.
_IGNORED = (
  re.compile(r"model/encoder/layer/inter_token_blocks"),
  re.compile(r"model/embeddings/word_embeddings/.*"),
  re.compile(r"model/embeddings/(position|token_type)_ids"),
)


class PublishedHypernetError(PublishedConfigError):
  """A published-hypernetwork folder that is missing, unreadable, or does not match its config."""


def split_spec(spec: str | Path) -> tuple[str, str | None]:
  """(folder or hub name, language or None): an existing path is taken whole, else a trailing `@LANG` is split."""
  text = str(spec)
  if Path(text).exists() or "@" not in text:
    return text, None
  location, language = text.rsplit("@", 1)
  return location, language or None


def is_published_spec(spec: str | Path) -> bool:
  """True for a folder whose config.json is a published hypernetwork's, or a hub name (zett's own hypernetworks
  are folders; every hypernetwork on the hub that zett reads is a published one)."""
  location, _ = split_spec(spec)
  path = Path(location)
  if path.is_dir():
    try:
      return is_published_config(json.loads((path / CONFIG_NAME).read_text()))
    except (OSError, json.JSONDecodeError, AttributeError):
      return False
  return not path.exists() and bool(_HUB_NAME.fullmatch(location))


def _download(repo_id: str) -> Path:
  """The hub repo's config, tokenizer and one weights file (safetensors, else msgpack), via the local HF cache."""
  try:
    from huggingface_hub import list_repo_files, snapshot_download

    files = set(list_repo_files(repo_id))
    weights = SAFETENSORS_NAME if SAFETENSORS_NAME in files else MSGPACK_NAME
    return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_NAME, weights, *TOKENIZER_FILES]))
  except Exception as e:  # network, authentication, missing repo: one message that names the repo
    try:  # offline: a complete earlier download is enough
      from huggingface_hub import snapshot_download

      folder = Path(snapshot_download(repo_id, local_files_only=True))
      if (folder / CONFIG_NAME).is_file():
        return folder
    except Exception:
      pass
    raise PublishedHypernetError(
      f"{repo_id}: not a local folder, and downloading it from the Hugging Face hub failed "
      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); download it where there is network "
      f"(git clone https://huggingface.co/{repo_id}) and pass the folder"
    ) from None


def resolve_folder(location: str) -> Path:
  path = Path(location)
  if path.is_dir():
    return path
  if path.exists():
    raise PublishedHypernetError(f"{location}: not a folder")
  if not _HUB_NAME.fullmatch(location):
    raise PublishedHypernetError(f"{location}: hypernetwork folder does not exist (and it is not a hub name)")
  return _download(location)


def _pytorch_to_flax_name(name: str, ndim: int) -> tuple[str, bool]:
  """(Flax path, whether to transpose) for a name of their PyTorch port (the inverse of what their
  `scripts/convert_to_pt.py` did with transformers' Flax->PyTorch loader, after renaming `layers_N` to `N`)."""
  if name == "lang_embeddings.weight":  # the port keeps it at the top level; Flax has it inside the body
    return "model/embeddings/lang_embedding/embedding", False
  parts = name.split(".")
  parts = [
    f"layers_{p}" if p.isdigit() and i > 0 and parts[i - 1].startswith(("input_projection", "output_projection")) else p
    for i, p in enumerate(parts)
  ]
  leaf = parts[-1]
  if leaf == "weight":
    if parts[-2].endswith("embeddings"):
      parts[-1] = "embedding"
      return "/".join(parts), False
    if ndim == 1:
      parts[-1] = "scale"
      return "/".join(parts), False
    parts[-1] = "kernel"
    return "/".join(parts), True
  return "/".join(parts), False


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file

  try:
    flat = load_file(str(path))
  except Exception as e:  # safetensors raises its own error types
    raise PublishedHypernetError(f"{path}: unreadable safetensors file ({e})") from None
  out = {}
  for name, value in flat.items():
    flax_name, transpose = _pytorch_to_flax_name(name, value.ndim)
    out[flax_name] = value.T if transpose else value
  return out


def _read_msgpack(path: Path) -> dict[str, np.ndarray]:
  from flax import serialization, traverse_util

  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several error types
    raise PublishedHypernetError(f"{path}: unreadable Flax msgpack file ({e})") from None
  if isinstance(tree, dict) and set(tree) == {"params"}:
    tree = tree["params"]
  flat: dict[tuple, Any] = traverse_util.flatten_dict(tree)  # leaves: the file's arrays
  return {"/".join(map(str, key)): value for key, value in flat.items()}


def weights_file(folder: Path) -> Path:
  for name in (SAFETENSORS_NAME, MSGPACK_NAME):
    if (folder / name).is_file():
      return folder / name
  raise PublishedHypernetError(f"{folder}: no {SAFETENSORS_NAME} or {MSGPACK_NAME}")


def _nest(flat: dict[str, np.ndarray]) -> dict:
  import jax.numpy as jnp

  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = jnp.asarray(np.asarray(value, dtype=np.float32))
  return tree


def check_params(where: str, config: PublishedHypernetConfig, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The parameters the forward pass reads, after checking names and shapes against the config."""
  from zett.hypernet.io import check_param_shapes
  from zett.hypernet.published_model import expected_shapes

  used = {k: v for k, v in flat.items() if not any(p.fullmatch(k) for p in _IGNORED)}
  check_param_shapes(where, expected_shapes(config), used, PublishedHypernetError, CONFIG_NAME)
  return used


def read_published_hypernet(spec: str | Path, language: str | None = None):
  """(PublishedHypernetConfig, params) from a published folder or hub name (`SPEC@LANG` picks a language); use
  `hypernet.load_hypernetwork`."""
  location, spec_language = split_spec(spec)
  folder = resolve_folder(location)
  config_file = folder / CONFIG_NAME
  try:
    record = json.loads(config_file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise PublishedHypernetError(f"{location}: no readable {CONFIG_NAME} ({e})") from None
  weights = weights_file(folder)
  flat = _read_safetensors(weights) if weights.name == SAFETENSORS_NAME else _read_msgpack(weights)
  positions = flat.get("model/embeddings/position_embeddings/embedding")
  if positions is None:
    raise PublishedHypernetError(f"{weights}: no position table (model/embeddings/position_embeddings)")
  config = parse_published_config(record, location, language or spec_language, num_positions=positions.shape[0])
  tokenizer = folder / "tokenizer.json"
  if not tokenizer.is_file():
    import warnings

    warnings.warn(
      f"{location}: no tokenizer.json beside the weights; target tokens will be spelled with the base "
      "model's tokenizer instead of the hypernetwork's byte-level one (ids may differ for bytes the base "
      "spells with byte fallback)",
      stacklevel=2,
    )
  config = _with_files(config, str(weights), str(tokenizer) if tokenizer.is_file() else "")
  return config, _nest(check_params(str(weights), config, flat))


def _with_files(config: PublishedHypernetConfig, weights: str, tokenizer: str) -> PublishedHypernetConfig:
  import dataclasses

  return dataclasses.replace(config, weights_file=weights, surface_tokenizer=tokenizer)
