"""Hugging Face checkpoints in and out: config.json + safetensors (single or sharded), tokenizer files.

Generic over families: the registry picks the family from `model_type`, and the family maps tensors by
their Hugging Face names. Exports load with `transformers.AutoModelForCausalLM` / `AutoModelForMaskedLM`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zett.interop._safetensors import SafetensorsFile, ShardedTensors, write_safetensors
from zett.models.base import BaseModel, cast_params
from zett.models.family import ModelLoadError, family_for_model_type
from zett.sha256 import file_sha256
from zett.staging import new_staging_folder, replace_folder
from zett.tokenization.byte_level import TokenizerError
from zett.tokenization.tokenizer import Tokenizer, from_transformers

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 2 << 30
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def read_config(folder: str | Path) -> dict[str, Any]:
  """config.json of a checkpoint folder as a dict; ModelLoadError if absent or malformed."""
  folder = Path(folder)
  path = folder / "config.json"
  if not folder.is_dir():
    raise ModelLoadError(f"{folder}: not a directory")
  if not path.is_file():
    raise ModelLoadError(f"{path}: missing (a Hugging Face model folder needs config.json)")
  try:
    config = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ModelLoadError(f"{path}: not valid JSON: {e}") from e
  if not isinstance(config, dict) or "model_type" not in config:
    raise ModelLoadError(f"{path}: no model_type field")
  return config


def read_tensors(folder: str | Path) -> tuple[ShardedTensors, list[Path]]:
  """All tensors of a folder (single file or sharded via the index), plus the files in read order."""
  folder = Path(folder)
  index_path = folder / INDEX_FILE
  if index_path.is_file():
    try:
      weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ModelLoadError(f"{index_path}: malformed index ({e})") from e
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
      raise ModelLoadError(f"{index_path}: shard files missing: {', '.join(missing)}")
    files = {n: SafetensorsFile(folder / n) for n in names}
    for tensor, shard in weight_map.items():
      if tensor not in files[shard]:
        raise ModelLoadError(f"{folder / shard}: missing tensor {tensor!r} listed in {INDEX_FILE}")
    return ShardedTensors(files), [folder / n for n in names]
  single = folder / SINGLE_FILE
  if not single.is_file():
    raise ModelLoadError(f"{folder}: no {SINGLE_FILE} or {INDEX_FILE}")
  return ShardedTensors({SINGLE_FILE: SafetensorsFile(single)}), [single]


def load_pretrained(
  folder: str | Path, dtype=jnp.float32, param_dtype=jnp.float32, name: str | None = None, load_tokenizer: bool = True
) -> BaseModel:
  """A `BaseModel` from a local Hugging Face folder (config.json + safetensors [+ tokenizer files])."""
  folder = Path(folder)
  hf_config = read_config(folder)
  family = family_for_model_type(hf_config["model_type"], where=str(folder / "config.json"))
  try:
    config = family.config_from_hf(hf_config)
  except (KeyError, ValueError, TypeError) as e:
    raise ModelLoadError(f"{folder / 'config.json'}: unsupported or incomplete config: {e!r}") from e
  tensors, files = read_tensors(folder)
  where = files[0] if len(files) == 1 else folder / INDEX_FILE
  try:
    params = family.params_from_hf(config, tensors)
  except ModelLoadError as e:
    raise type(e)(f"{where}: {e}") from e
  params = cast_params(params, param_dtype)
  name = name or folder.name
  tokenizer = load_folder_tokenizer(folder, name) if load_tokenizer else None
  return BaseModel.from_params(family, config, params, name, tokenizer, dtype, weights_sha256=file_sha256(files))


def load_folder_tokenizer(folder: Path, name: str | None = None) -> Tokenizer | None:
  """The folder's tokenizer, read by `transformers.AutoTokenizer` (so every folder `transformers` reads loads, with
  its roles and `add_bos_token`) as a `Tokenizer` named `name` (default: the folder); None if it ships no tokenizer
  files."""
  if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
    return None
  from transformers import AutoTokenizer

  try:
    hf = AutoTokenizer.from_pretrained(str(folder))
  except (OSError, ValueError) as e:
    raise ModelLoadError(f"{folder}: tokenizer files present but unreadable: {e}") from e
  try:
    return from_transformers(hf, name or str(folder))
  except TokenizerError as e:
    raise ModelLoadError(f"{folder}: tokenizer files present but unusable: {e}") from e


def load_from_hub(repo_id: str, dtype=jnp.float32, param_dtype=jnp.float32, revision: str | None = None) -> BaseModel:
  """Downloads (needs network) the config, safetensors and tokenizer files of a hub model, then loads it."""
  from huggingface_hub import snapshot_download

  try:
    folder = snapshot_download(
      repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt"]
    )
  except Exception as e:  # the hub client raises many types; the user needs one message.
    raise ModelLoadError(f"{repo_id}: not a local path, and downloading it from the hub failed: {e}") from e
  return load_pretrained(folder, dtype=dtype, param_dtype=param_dtype, name=repo_id)


def _shards(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> list[dict[str, np.ndarray]]:
  shards, current, size = [], {}, 0
  for name, array in tensors.items():
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = array
    size += array.nbytes
  return shards + [current]


def _model_card(name: str, model: BaseModel, auto_class: str, num_params: int) -> str:
  return (
    f"---\nlibrary_name: transformers\n---\n\n# {name}\n\n"
    f"Exported by zett from `{model.name}` (family `{model.family.name}`, {num_params:,} parameters; source "
    f"weights sha256 `{model.weights_sha256}`).\n\n"
    f"```python\nfrom transformers import {auto_class}, AutoTokenizer\n"
    f'model = {auto_class}.from_pretrained("path/to/this/folder")\n```\n'
  )


def save_pretrained(
  model: BaseModel,
  out_dir: str | Path,
  tokenizer: Tokenizer | Any = None,
  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
  name: str | None = None,
) -> Path:
  """Writes `model` as a Hugging Face folder that `transformers` loads as is.

  Writes config.json, model.safetensors (or shards + model.safetensors.index.json when larger than
  `max_shard_bytes`), the tokenizer (`tokenizer`, else `model.tokenizer`, if any: a `Tokenizer`, saved as its
  `transformers` equivalent, or anything with `save_pretrained`) and a README.md card.
  Everything is written to a temporary sibling folder first and renamed into place, so `out_dir` is
  never left half-written; an existing `out_dir` is replaced. `name` titles the model card.
  """
  out_dir = Path(out_dir)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  family, config = model.family, model.config
  tensors = {k: np.asarray(v) for k, v in family.params_to_hf(config, jax.device_get(model.params)).items()}
  hf_config = family.config_to_hf(config)
  float_dtypes = {str(a.dtype) for a in tensors.values() if a.dtype.kind == "f" or str(a.dtype) == "bfloat16"}
  hf_config["dtype"] = "bfloat16" if float_dtypes == {"bfloat16"} else "float32"
  tokenizer = tokenizer if tokenizer is not None else model.tokenizer
  auto_class = "AutoModelForCausalLM" if family.is_causal else "AutoModelForMaskedLM"

  tmp = new_staging_folder(out_dir)
  try:
    (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
      write_safetensors(tmp / SINGLE_FILE, shards[0])
    else:
      weight_map = {}
      for i, shard in enumerate(shards, 1):
        shard_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(tmp / shard_name, shard)
        weight_map.update({k: shard_name for k in shard})
      index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))}, "weight_map": weight_map}
      (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
      # The one place a model's `Tokenizer` becomes a `transformers` tokenizer: the files are what it saves.
      files: Any = tokenizer.to_transformers() if isinstance(tokenizer, Tokenizer) else tokenizer
      files.save_pretrained(str(tmp))
    num_params = int(sum(a.size for a in tensors.values()))
    (tmp / "README.md").write_text(_model_card(name or out_dir.name, model, auto_class, num_params))
    replace_folder(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir
