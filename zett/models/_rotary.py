"""Rotary position embeddings (RoPE) of the Llama-style decoders, including "linear" and Llama-3 scaling."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np


def rope_from_hf(hf: Mapping[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
  """(rope_theta, sorted (key, value) pairs of the other rope parameters or None) of an HF config.json dict.

  Raises ValueError on rope types and options we do not implement.
  """
  # transformers 5 folds rope_theta and rope_scaling into rope_parameters; older configs have both.
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
  if rope.get("rope_type", rope.get("type", "default")) == "default":
    rope = {}
  if rope:
    rope_inverse_frequencies(2, rope_theta, rope)  # raises on unsupported types
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported")
  return rope_theta, tuple(sorted(rope.items())) or None


def rope_inverse_frequencies(
  head_dim: int, rope_theta: float, rope_scaling: Mapping[str, Any] | None = None
) -> np.ndarray:
  """Inverse frequencies [head_dim // 2] (float32), with "linear" or Llama-3 ("llama3") scaling.

  Mirrors `transformers.modeling_rope_utils` step by step in float32 so logits match to 1e-6.
  """
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  inv_freq = (1.0 / (np.float32(rope_theta) ** exponents)).astype(np.float32)
  rope_type = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type", "default"))
  if rope_type == "default":
    return inv_freq
  assert rope_scaling is not None  # without one the type is "default"
  if rope_type == "linear":
    return (inv_freq / np.float32(rope_scaling["factor"])).astype(np.float32)
  if rope_type == "llama3":
    factor = rope_scaling["factor"]
    low_freq_factor = rope_scaling["low_freq_factor"]
    high_freq_factor = rope_scaling["high_freq_factor"]
    old_context_len = rope_scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
    smooth = ((old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"unsupported rope scaling type {rope_type!r} (supported: default, linear, llama3)")


def rotary_cos_sin(position_ids_bt, inv_freq_h):
  """cos, sin float32 [B, T, head_dim] for the half-rotation layout used by `transformers`."""
  freqs_bth = position_ids_bt.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_h)[None, None, :]
  angles_btd = jnp.concatenate([freqs_bth, freqs_bth], axis=-1)
  return jnp.cos(angles_btd), jnp.sin(angles_btd)


def apply_rotary(x_bthd, cos_btd, sin_btd):
  half = x_bthd.shape[-1] // 2
  rotated = jnp.concatenate([-x_bthd[..., half:], x_bthd[..., :half]], axis=-1)
  x32 = x_bthd.astype(jnp.float32)
  out = x32 * cos_btd[:, :, None, :] + rotated.astype(jnp.float32) * sin_btd[:, :, None, :]
  return out.astype(x_bthd.dtype)
