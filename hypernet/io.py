"""Hypernetwork checkpoints for interchange: safetensors weights + a self-describing config.json.

Layout of a hypernetwork folder:
  config.json             {"hypernet": HypernetConfig fields, "weights_sha256": ..., "format": 1}
  hypernet.safetensors    parameters, names = "/"-joined parameter paths
Reading verifies the weights' sha256 and every parameter's shape against the config, so a
corrupt or mismatched file fails with one clear error instead of wrong embeddings (`hypernet.load_hypernetwork` is
the loader; this module is the format).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from zett.errors import ZettError
from zett.hypernet.config import HypernetConfig
from zett.models.family import Embeddings
from zett.sha256 import file_sha256
from zett.staging import new_staging_folder, replace_folder

WEIGHTS_NAME = "hypernet.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class HypernetCheckpointError(ZettError, ValueError):
  """A hypernetwork folder that is missing, corrupt, or does not fit its config or base."""


def _flatten(params, prefix=()):
  flat = {}
  for key, value in params.items():
    path = prefix + (str(key),)
    if isinstance(value, dict):
      flat.update(_flatten(value, path))
    else:
      flat["/".join(path)] = value
  return flat


def _unflatten(flat):
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    parts = name.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def save_hypernet(out_dir: str | Path, config: HypernetConfig, params, dtype=np.float32) -> Path:
  """Writes config.json + hypernet.safetensors atomically (temp folder, then rename)."""
  out_dir = Path(out_dir)
  tmp = new_staging_folder(out_dir)
  try:
    flat = {k: np.asarray(jax.device_get(v)).astype(dtype) for k, v in _flatten(params).items()}
    if dtype == jnp.bfloat16:
      flat = {k: np.asarray(v, dtype=jnp.bfloat16) for k, v in flat.items()}
    save_file(flat, str(tmp / WEIGHTS_NAME), metadata={"format": "zett-hypernet"})
    record = {
      "format": FORMAT_VERSION,
      "hypernet": dataclasses.asdict(config),
      "weights_sha256": file_sha256(tmp / WEIGHTS_NAME),
    }
    (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
    replace_folder(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def load_hypernet_config(path: str | Path) -> tuple[HypernetConfig, dict]:
  path = Path(path)
  config_file = path / CONFIG_NAME
  if not path.is_dir():
    raise HypernetCheckpointError(f"{path}: hypernetwork folder does not exist")
  if not config_file.is_file():
    raise HypernetCheckpointError(f"{path}: no {CONFIG_NAME} in the hypernetwork folder")
  try:
    record = json.loads(config_file.read_text())
    config = HypernetConfig(**record["hypernet"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise HypernetCheckpointError(f"{config_file}: not a valid hypernetwork config ({e})") from None
  return config, record


def read_hypernet_folder(path: str | Path, pinned_sha256: str | None = None):
  """(config, params, weights sha256) of a folder written by `save_hypernet`; use `hypernet.load_hypernetwork`.

  The weights must hash to the sha256 config.json records and, when given, to `pinned_sha256` (a copy shipped with
  zett, whose config.json could have been replaced together with the weights).
  """
  path = Path(path)
  config, record = load_hypernet_config(path)
  weights = path / WEIGHTS_NAME
  if not weights.is_file():
    raise HypernetCheckpointError(f"{path}: missing {WEIGHTS_NAME}")
  sha = file_sha256(weights)
  if sha != record.get("weights_sha256"):
    raise HypernetCheckpointError(f"{weights}: sha256 does not match config.json (file corrupt or replaced)")
  if pinned_sha256 and sha != pinned_sha256:
    raise HypernetCheckpointError(
      f"{weights}: sha256 differs from the one pinned in zett.assets (file corrupt or replaced); reinstall zett"
    )
  try:
    flat = load_file(str(weights))
  except Exception as e:  # safetensors raises its own error types
    raise HypernetCheckpointError(f"{weights}: unreadable safetensors file ({e})") from None
  params = _unflatten({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})
  _check_shapes(path, config, params)
  return config, params, sha


def _check_shapes(path, config: HypernetConfig, params) -> None:
  import flax.linen as nn

  from zett.hypernet.model import abstract_params  # local: model imports are heavier

  d, vb = config.embedding_dim, config.base_vocab_size
  base = Embeddings(
    jax.ShapeDtypeStruct((vb, d), jnp.float32),
    jax.ShapeDtypeStruct((vb, d), jnp.float32) if config.predict_output_embeddings else None,
    jax.ShapeDtypeStruct((vb,), jnp.float32) if config.predict_output_bias else None,
  )
  expected = {name: tuple(spec.shape) for name, spec in _flatten(nn.meta.unbox(abstract_params(config, base))).items()}
  check_param_shapes(path, expected, _flatten(params), HypernetCheckpointError, "the config")


def check_param_shapes(
  where, expected: dict[str, tuple[int, ...]], got: dict, error: type[ZettError], config_name: str
) -> None:
  """Raises `error` naming `where` unless `got` has exactly the parameter names of `expected`, in its shapes."""
  missing = sorted(set(expected) - set(got))
  extra = sorted(set(got) - set(expected))
  if missing or extra:
    raise error(f"{where}: parameters do not match {config_name} (missing: {missing[:5]}, unexpected: {extra[:5]})")
  for name, shape in expected.items():
    if tuple(got[name].shape) != shape:
      raise error(f"{where}: parameter {name} has shape {tuple(got[name].shape)}, {config_name} implies {shape}")
