"""Attention shared by the families: the q/k/v and output projections, additive masks, grouped-query attention,
and the functional KV cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zett.models._layers import dense

# Finite rather than -inf: a query whose keys are all masked (a padding position) then gets a uniform
# softmax instead of NaNs, which would otherwise leak into gradients through the masked sum.
_MASK_VALUE = float(np.finfo(np.float32).min)


def qkv_projections(
  module: nn.Module, x_btd, num_heads: int, num_kv_heads: int, head_dim: int, dtype, bias: bool, kv_axis: str
):
  """query [B, T, H, Dh], key and value [B, T, K, Dh] of `x_btd`, declaring `q_proj`, `k_proj`, `v_proj` (and with
  `bias`, `q_bias`, `k_bias`, `v_bias`) on `module`; `kv_axis` is the logical name of the key/value heads axis."""
  hidden_size = x_btd.shape[-1]

  def project(name: str, heads: int, heads_axis: str):
    axes = ("embed", heads_axis, "head_dim")
    bias_shape = (heads, head_dim) if bias else None
    return dense(
      module, name, x_btd, "btd,dhe->bthe", (hidden_size, heads, head_dim), axes, dtype, bias_shape, axes[1:]
    )

  return (
    project("q_proj", num_heads, "heads"),
    project("k_proj", num_kv_heads, kv_axis),
    project("v_proj", num_kv_heads, kv_axis),
  )


def output_projection(module: nn.Module, attended_bthd, hidden_size: int, dtype, bias: bool):
  """[B, T, D] of the attended heads, declaring `o_proj` [H, Dh, D] (and with `bias`, `o_bias`) on `module`."""
  _, _, num_heads, head_dim = attended_bthd.shape
  shape, axes = (num_heads, head_dim, hidden_size), ("heads", "head_dim", "embed")
  return dense(
    module, "o_proj", attended_bthd, "bthe,hed->btd", shape, axes, dtype, (hidden_size,) if bias else None, ("embed",)
  )


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


def padding_bias(key_mask_bs):
  """Additive float32 bias [B, 1, 1, S] of a bidirectional encoder: padding keys masked, every query alike."""
  return jnp.where(key_mask_bs[:, None, None, :] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)


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


def write_layer_cache(layer_cache, key_btkd, value_btkd, cache_index):
  """(keys, values, layer cache) for one layer: this call's keys and values written into the layer's
  (key, value) cache from slot `cache_index`, so attention reads every slot; without a cache, this call's own."""
  if layer_cache is None:
    return key_btkd, value_btkd, None
  cached_key, cached_value = layer_cache
  key_bskd = jax.lax.dynamic_update_slice(cached_key, key_btkd.astype(cached_key.dtype), (0, cache_index, 0, 0))
  value_bskd = jax.lax.dynamic_update_slice(cached_value, value_btkd.astype(cached_value.dtype), (0, cache_index, 0, 0))
  return key_bskd, value_bskd, (key_bskd, value_bskd)
