"""Shared decoder blocks: RMSNorm, rotary position embeddings (incl. Llama-3 scaling), attention masks,
grouped-query attention over an optional functional KV cache.

Every parameter is declared with logical axis names (see `LOGICAL_AXIS_NAMES`) so that one
sharding-rules table can map them to mesh axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LOGICAL_AXIS_NAMES = ("vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers")
"""Every logical axis name a base-model parameter may carry (scanned layers add "layers" in front)."""

# Finite rather than -inf: a query whose keys are all masked (a padding position) then gets a uniform
# softmax instead of NaNs, which would otherwise leak into gradients through the masked sum.
_MASK_VALUE = float(np.finfo(np.float32).min)
_NORMAL_002 = nn.initializers.normal(0.02)


def param(
  module: nn.Module,
  name: str,
  axes: tuple[str | None, ...],
  shape: tuple[int, ...],
  init=_NORMAL_002,
  dtype=jnp.float32,
) -> jax.Array:
  """Declares a parameter whose dimensions carry logical axis names (None: a dimension with no name)."""
  # unbox=True is the default; saying it selects the overload of Flax's `param` that returns the array inside the
  # LogicallyPartitioned box (the one without it types the result as the box).
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype, unbox=True)


class RMSNorm(nn.Module):
  """Root-mean-square norm computed in float32, as `transformers`' LlamaRMSNorm does."""

  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_btd):
    scale_d = param(self, "scale", ("embed",), (x_btd.shape[-1],), nn.initializers.ones)
    x32 = x_btd.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    # HF casts back to the input dtype before multiplying by the weight.
    return scale_d.astype(self.dtype) * x32.astype(self.dtype)


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


def attention_bias(key_mask_bs, query_offset, query_length: int, sliding_window: int | None = None):
  """Additive float32 bias [B, 1, T, S]: causal in slot order, padding keys masked.

  Args:
    key_mask_bs: 1 for real tokens in key slots [B, S] (the whole cache when decoding).
    query_offset: slot index of the first query (0 without a cache; the cache fill index with one).
    query_length: T.
    sliding_window: Mistral-style window in slots (keys older than this are masked), or None.
  """
  query_slots_t = query_offset + jnp.arange(query_length)
  key_slots_s = jnp.arange(key_mask_bs.shape[1])
  allowed_ts = key_slots_s[None, :] <= query_slots_t[:, None]
  if sliding_window is not None:
    allowed_ts &= (query_slots_t[:, None] - key_slots_s[None, :]) < sliding_window
  allowed_bts = allowed_ts[None] & (key_mask_bs[:, None, :] > 0)
  return jnp.where(allowed_bts, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None]


def grouped_query_attention(q_bthd, k_bskd, v_bskd, bias_b1ts, dtype):
  """Softmax attention with H query heads sharing K key/value heads; softmax in float32."""
  batch, length, num_heads, head_dim = q_bthd.shape
  num_kv_heads = k_bskd.shape[2]
  q_btkgd = q_bthd.reshape(batch, length, num_kv_heads, num_heads // num_kv_heads, head_dim)
  scores_bkgts = jnp.einsum(
    "btkgd,bskd->bkgts", q_btkgd, k_bskd.astype(dtype), preferred_element_type=jnp.float32
  ) / np.sqrt(head_dim).astype(np.float32)
  scores_bkgts = scores_bkgts + bias_b1ts[:, :, None]
  probs_bkgts = jax.nn.softmax(scores_bkgts, axis=-1).astype(dtype)
  out_btkgd = jnp.einsum("bkgts,bskd->btkgd", probs_bkgts, v_bskd.astype(dtype))
  return out_btkgd.reshape(batch, length, num_heads, head_dim)


class KVCache(NamedTuple):
  """Functional KV cache for incremental decoding; pass it in, get the updated one back.

  key, value: [layers, B, S, kv_heads, head_dim]. mask: int32 [B, S], 1 where a slot holds a real
  token. index: int32 [], the number of slots already written (the next write position).
  """

  key: Any
  value: Any
  mask: Any
  index: Any


def empty_kv_cache(
  num_layers: int, batch_size: int, max_length: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32
) -> KVCache:
  shape = (num_layers, batch_size, max_length, num_kv_heads, head_dim)
  return KVCache(
    jnp.zeros(shape, dtype),
    jnp.zeros(shape, dtype),
    jnp.zeros((batch_size, max_length), jnp.int32),
    jnp.zeros((), jnp.int32),
  )


def positions_from_mask(mask_bt):
  """Position ids counting real tokens only (left padding shifts them); padding slots get 0."""
  mask_bt = mask_bt.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask_bt, axis=-1) - 1, 0)


def vocabulary_logits(hidden_btd, lm_head_vd, bias_v, dtype):
  """float32 logits [B, T, V] = hidden @ lm_head.T (+ bias), with the matmul in `dtype`."""
  logits = jnp.einsum(
    "btd,vd->btv", hidden_btd, jnp.asarray(lm_head_vd).astype(dtype), preferred_element_type=jnp.float32
  )
  if bias_v is not None:
    logits = logits + jnp.asarray(bias_v).astype(jnp.float32)
  return logits


def init_module_params(module: nn.Module, rng) -> Any:
  """Random float32 params of a family module (plain arrays). Jitted: linen's eager init runs the scanned
  layers op by op, which is much slower to dispatch."""
  init = jax.jit(lambda key: module.init(key, input_ids=jnp.zeros((1, 2), jnp.int32))["params"])
  return nn.meta.unbox(init(rng))


def module_logical_axes(module: nn.Module) -> Any:
  """The logical `PartitionSpec` of every parameter of a family module, without allocating them."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), input_ids=jnp.zeros((1, 2), jnp.int32)))
  return nn.get_partition_spec(abstract)["params"]
