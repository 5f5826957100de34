"""Llama-style decoders in Flax (linen): Llama 2/3, Mistral, Qwen2, SmolLM2, TinyLlama.

Layers are scanned (`nn.scan`), so each layer parameter has a leading "layers" axis; that keeps
compile time flat in depth. Parameter tree (shapes without the leading layer axis for `layers/*`):

  embed_tokens [V, D]; lm_head [V, D] (untied only); final_norm/scale [D]
  layers/input_norm/scale [D], layers/post_attention_norm/scale [D]
  layers/q_proj [D, H, Dh] (+ q_bias [H, Dh]), k_proj/v_proj [D, K, Dh] (+ biases), o_proj [H, Dh, D]
  layers/gate_proj, up_proj [D, F], down_proj [F, D]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zett.models import _convention, _layers
from zett.models._attention import (
  KVCache,
  empty_kv_cache,
  grouped_query_attention,
  output_projection,
  qkv_projections,
  write_layer_cache,
)
from zett.models._convention import get_embeddings, with_embeddings
from zett.models._hf_layout import LayerTensor, layers_from_hf, layers_to_hf
from zett.models._layers import LOGICAL_AXIS_NAMES, dense
from zett.models._norm_act import RMSNorm
from zett.models._rotary import apply_rotary, rope_from_hf, rope_inverse_frequencies, rotary_cos_sin
from zett.models.family import Embeddings, Family, ModelOutput, Params, register, take_tensor

__all__ = ["LOGICAL_AXIS_NAMES", "LlamaConfig", "LlamaModule", "init_cache", "FAMILY"]

_MODEL_TYPES = ("llama", "mistral", "qwen2", "smollm2", "tinyllama")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  """Sorted (key, value) pairs of the HF rope parameters beyond rope_theta (hashable), or None."""
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  """Bias on q/k/v projections (Qwen2; Llama with attention_bias)."""
  o_bias: bool = False
  """Bias on the output projection (Llama with attention_bias only; Qwen2 has none)."""
  mlp_bias: bool = False
  sliding_window: int | None = None
  model_type: str = "llama"
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
        f"num_attention_heads {self.num_attention_heads} is not a multiple of "
        f"num_key_value_heads {self.num_key_value_heads}"
      )
    if self.model_type not in _MODEL_TYPES:
      raise ValueError(f"model_type {self.model_type!r} is not a Llama-style decoder")

  @property
  def rope_scaling_dict(self) -> dict[str, Any] | None:
    return dict(self.rope_scaling) if self.rope_scaling else None


def config_from_hf(hf: Mapping[str, Any]) -> LlamaConfig:
  model_type = hf.get("model_type", "llama")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r} (only silu)")
  rope_theta, rope_scaling = rope_from_hf(hf)
  sliding_window = None
  if model_type == "mistral":
    sliding_window = hf.get("sliding_window")
  elif model_type == "qwen2" and hf.get("use_sliding_window"):
    raise ValueError("qwen2 with use_sliding_window=true is not supported")
  heads = hf["num_attention_heads"]
  eos = hf.get("eos_token_id")
  attention_bias = bool(hf.get("attention_bias", False))
  return LlamaConfig(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    intermediate_size=hf["intermediate_size"],
    num_hidden_layers=hf["num_hidden_layers"],
    num_attention_heads=heads,
    num_key_value_heads=hf.get("num_key_value_heads") or heads,
    head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
    rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
    rope_theta=rope_theta,
    rope_scaling=rope_scaling,
    max_position_embeddings=hf.get("max_position_embeddings", 2048),
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    qkv_bias=model_type == "qwen2" or attention_bias,
    o_bias=model_type != "qwen2" and attention_bias,
    mlp_bias=bool(hf.get("mlp_bias", False)),
    sliding_window=sliding_window,
    model_type=model_type if model_type in ("mistral", "qwen2") else "llama",
    bos_token_id=hf.get("bos_token_id"),
    eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
    pad_token_id=hf.get("pad_token_id"),
  )


def config_to_hf(config: LlamaConfig) -> dict[str, Any]:
  model_type = config.model_type
  rope = {"rope_type": "default", **(config.rope_scaling_dict or {}), "rope_theta": config.rope_theta}
  hf = {
    "architectures": [_ARCHITECTURES[model_type]],
    "model_type": model_type,
    "vocab_size": config.vocab_size,
    "hidden_size": config.hidden_size,
    "intermediate_size": config.intermediate_size,
    "num_hidden_layers": config.num_hidden_layers,
    "num_attention_heads": config.num_attention_heads,
    "num_key_value_heads": config.num_key_value_heads,
    "head_dim": config.head_dim,
    "hidden_act": "silu",
    "rms_norm_eps": config.rms_norm_eps,
    "rope_theta": config.rope_theta,
    "rope_parameters": rope,
    "max_position_embeddings": config.max_position_embeddings,
    "tie_word_embeddings": config.tie_word_embeddings,
    "bos_token_id": config.bos_token_id,
    "pad_token_id": config.pad_token_id,
    "eos_token_id": list(config.eos_token_id) if isinstance(config.eos_token_id, tuple) else config.eos_token_id,
  }
  if model_type == "llama":
    hf.update(attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias)
  if model_type == "mistral":
    hf["sliding_window"] = config.sliding_window
  if model_type == "qwen2":
    hf.update(use_sliding_window=False, sliding_window=None)
  return hf


class _DecoderLayer(nn.Module):
  config: LlamaConfig
  dtype: Any = jnp.float32
  matmul_dtype: Any = None
  """Input dtype of the dense products (float32 accumulation; `_layers.dense`); None: `dtype`."""

  @nn.compact
  def __call__(self, hidden_btd, cos_btd, sin_btd, bias_b1ts, cache_index, layer_cache):
    cfg, dtype = self.config, self.dtype
    d, h, k, dh, f = (
      cfg.hidden_size,
      cfg.num_attention_heads,
      cfg.num_key_value_heads,
      cfg.head_dim,
      cfg.intermediate_size,
    )

    x = RMSNorm(cfg.rms_norm_eps, dtype, name="input_norm")(hidden_btd)
    query, key, value = qkv_projections(self, x, h, k, dh, dtype, cfg.qkv_bias, kv_axis="kv_heads")
    query = apply_rotary(query, cos_btd, sin_btd)
    key = apply_rotary(key, cos_btd, sin_btd)
    key, value, layer_cache = write_layer_cache(layer_cache, key, value, cache_index)
    attended = grouped_query_attention(query, key, value, bias_b1ts, dtype)
    hidden_btd = hidden_btd + output_projection(self, attended, d, dtype, cfg.o_bias)

    x = RMSNorm(cfg.rms_norm_eps, dtype, name="post_attention_norm")(hidden_btd)
    mlp_bias = cfg.mlp_bias
    f_bias, d_bias = ((f,), (d,)) if mlp_bias else (None, None)
    gate = dense(self, "gate_proj", x, "btd,df->btf", (d, f), ("embed", "mlp"), dtype, f_bias, ("mlp",))
    up = dense(self, "up_proj", x, "btd,df->btf", (d, f), ("embed", "mlp"), dtype, f_bias, ("mlp",))
    x = nn.silu(gate) * up
    down = dense(self, "down_proj", x, "btf,fd->btd", (f, d), ("mlp", "embed"), dtype, d_bias, ("embed",))
    return hidden_btd + down, layer_cache


class LlamaModule(nn.Module):
  """A Llama-style decoder following the calling convention in `zett.models.family`."""

  config: LlamaConfig
  dtype: Any = jnp.float32
  remat: bool = False
  """Recompute each layer in the backward pass instead of keeping its activations (`nn.remat`): only the layer
  inputs stay in memory. A runtime switch, not part of the config, so exports are unaffected."""
  matmul_dtype: Any = None
  """Input dtype of the dense products, e.g. bfloat16 under a float32 `dtype` (float32 accumulation; a runtime
  switch like `remat`, so exports are unaffected); None: `dtype`."""

  @nn.compact
  def __call__(
    self,
    input_ids=None,
    inputs_embeds=None,
    attention_mask=None,
    position_ids=None,
    output_embeddings=None,
    output_bias=None,
    cache: KVCache | None = None,
    compute_logits=True,
  ):
    cfg, dtype = self.config, self.dtype
    inputs = _convention.embed_inputs(self, cfg, dtype, input_ids, inputs_embeds, attention_mask)
    slots = _convention.decoder_slots(inputs.attention_mask_bt, position_ids, cache, cfg.sliding_window)
    inv_freq = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_dict)
    cos_btd, sin_btd = rotary_cos_sin(slots.position_ids_bt, inv_freq)

    in_axes = (nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0)
    layers = _layers.scanned_layers(_DecoderLayer, cfg.num_hidden_layers, in_axes, self.remat)
    hidden_btd, layer_caches = layers(cfg, dtype, self.matmul_dtype, name="layers")(
      inputs.hidden_btd, cos_btd, sin_btd, slots.bias_b1ts, slots.cache_index, _convention.layer_caches(cache)
    )
    hidden_btd = RMSNorm(cfg.rms_norm_eps, dtype, name="final_norm")(hidden_btd)
    logits = _convention.lm_head_logits(
      self, cfg, inputs, hidden_btd, dtype, output_embeddings, output_bias, compute_logits
    )
    new_cache = _convention.advanced_cache(cache, layer_caches, slots)
    return ModelOutput(logits=logits, hidden_states=hidden_btd, cache=new_cache)


def make_module(config: LlamaConfig, dtype=jnp.float32, remat: bool = False) -> LlamaModule:
  return LlamaModule(config, dtype, remat)


def init_cache(config: LlamaConfig, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
  """An empty KV cache for `max_length` slots (prompt + generated tokens, padding included)."""
  return empty_kv_cache(
    config.num_hidden_layers, batch_size, max_length, config.num_key_value_heads, config.head_dim, dtype
  )


def init_params(config: LlamaConfig, rng: int | jax.Array = 0) -> Params:
  """Random float32 params: normal(0, 0.02) matrices, unit norm scales, zero biases.

  Args:
    rng: an int seed or a JAX PRNG key.

  Filled with numpy from the abstract shapes rather than by `module.init`, whose XLA compile of the
  whole forward costs tens of seconds on a loaded CPU even for tiny configs.
  """
  seed = rng
  if not isinstance(seed, (int, np.integer)):
    seed = np.asarray(jax.random.key_data(seed) if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed)
  generator = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return jnp.ones(leaf.shape, jnp.float32)
    if "bias" in name:
      return jnp.zeros(leaf.shape, jnp.float32)
    return jnp.asarray(generator.normal(0.0, 0.02, leaf.shape).astype(np.float32))

  return jax.tree_util.tree_map_with_path(fill, abstract_params(config))


def abstract_params(config: LlamaConfig) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter, without allocating any."""
  return _layers.module_abstract_params(LlamaModule(config))


def logical_param_axes(config: LlamaConfig) -> Params:
  """The logical `PartitionSpec` of every parameter (same tree as the params), without allocating them."""
  return _layers.module_logical_axes(LlamaModule(config))


# --- Hugging Face name mapping --------------------------------------------------------------------------------------


def _layer_map(config: LlamaConfig) -> list[LayerTensor]:
  d, h, k, dh, f = (
    config.hidden_size,
    config.num_attention_heads,
    config.num_key_value_heads,
    config.head_dim,
    config.intermediate_size,
  )
  names = [
    LayerTensor("input_norm/scale", "input_layernorm.weight", (d,), 0),
    LayerTensor("post_attention_norm/scale", "post_attention_layernorm.weight", (d,), 0),
    LayerTensor("q_proj", "self_attn.q_proj.weight", (d, h, dh), 1),
    LayerTensor("k_proj", "self_attn.k_proj.weight", (d, k, dh), 1),
    LayerTensor("v_proj", "self_attn.v_proj.weight", (d, k, dh), 1),
    LayerTensor("o_proj", "self_attn.o_proj.weight", (h, dh, d), 2),
    LayerTensor("gate_proj", "mlp.gate_proj.weight", (d, f), 1),
    LayerTensor("up_proj", "mlp.up_proj.weight", (d, f), 1),
    LayerTensor("down_proj", "mlp.down_proj.weight", (f, d), 1),
  ]
  if config.qkv_bias:
    names += [
      LayerTensor("q_bias", "self_attn.q_proj.bias", (h, dh), 0),
      LayerTensor("k_bias", "self_attn.k_proj.bias", (k, dh), 0),
      LayerTensor("v_bias", "self_attn.v_proj.bias", (k, dh), 0),
    ]
  if config.o_bias:
    names += [LayerTensor("o_bias", "self_attn.o_proj.bias", (d,), 0)]
  if config.mlp_bias:
    names += [
      LayerTensor(f"{n}_bias", f"mlp.{n}_proj.bias", (size,), 0) for n, size in (("gate", f), ("up", f), ("down", d))
    ]
  return names


def _layer_prefixes(config: LlamaConfig) -> list[str]:
  return [f"model.layers.{i}." for i in range(config.num_hidden_layers)]


def params_from_hf(config: LlamaConfig, tensors: Mapping[str, np.ndarray]) -> Params:
  """{HF name: array} -> our params (arrays keep their dtype); raises MissingTensorError / ShapeError."""
  v, d = config.vocab_size, config.hidden_size
  params: dict[str, Any] = {
    "embed_tokens": take_tensor(tensors, "model.embed_tokens.weight", (v, d)),
    "final_norm": {"scale": take_tensor(tensors, "model.norm.weight", (d,))},
  }
  if not config.tie_word_embeddings:
    params["lm_head"] = take_tensor(tensors, "lm_head.weight", (v, d))
  params["layers"] = layers_from_hf(tensors, _layer_map(config), _layer_prefixes(config))
  return params


def params_to_hf(config: LlamaConfig, params: Params) -> dict[str, np.ndarray]:
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
  out = {"model.embed_tokens.weight": params["embed_tokens"], "model.norm.weight": params["final_norm"]["scale"]}
  if not config.tie_word_embeddings:
    out["lm_head.weight"] = params["lm_head"]
  return out | layers_to_hf(params["layers"], _layer_map(config), _layer_prefixes(config))


def set_embeddings(config: LlamaConfig, params: Params, embeddings: Embeddings) -> tuple[LlamaConfig, Params]:
  if embeddings.bias is not None:
    raise ValueError("Llama-style decoders have no LM-head bias")
  if (embeddings.output is None) != config.tie_word_embeddings:
    raise ValueError(f"output embeddings must be {'None (tied)' if config.tie_word_embeddings else 'given (untied)'}")
  params = with_embeddings(params, embeddings)
  return dataclasses.replace(config, vocab_size=int(embeddings.input.shape[0])), params


FAMILY = register(
  Family(
    name="llama",
    model_types=_MODEL_TYPES,
    is_causal=True,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    make_module=make_module,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    get_embeddings=get_embeddings,
    set_embeddings=set_embeddings,
    init_cache=init_cache,
  )
)
