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

from zett.models import _layers
from zett.models._layers import LOGICAL_AXIS_NAMES, KVCache, param
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
  # transformers 5 folds rope_theta and rope_scaling into rope_parameters; older configs have both.
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
  if rope.get("rope_type", rope.get("type", "default")) == "default":
    rope = {}
  if rope:
    _layers.rope_inverse_frequencies(2, rope_theta, rope)  # raises on unsupported types
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported")
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
    rope_scaling=tuple(sorted(rope.items())) or None,
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
    zeros = nn.initializers.zeros

    def project(name, x, shape, axes, spec, bias_shape: tuple[int, ...] | None, bias_axes: tuple[str, ...]):
      y = jnp.einsum(spec, x, param(self, name, axes, shape).astype(dtype))
      if bias_shape is not None:
        y = y + param(self, name.replace("_proj", "_bias"), bias_axes, bias_shape, zeros).astype(dtype)
      return y

    x = _layers.RMSNorm(cfg.rms_norm_eps, dtype, name="input_norm")(hidden_btd)
    qkv_bias = cfg.qkv_bias
    q = project(
      "q_proj",
      x,
      (d, h, dh),
      ("embed", "heads", "head_dim"),
      "btd,dhe->bthe",
      (h, dh) if qkv_bias else None,
      ("heads", "head_dim"),
    )
    kv_args = (
      (d, k, dh),
      ("embed", "kv_heads", "head_dim"),
      "btd,dke->btke",
      (k, dh) if qkv_bias else None,
      ("kv_heads", "head_dim"),
    )
    key = project("k_proj", x, *kv_args)
    value = project("v_proj", x, *kv_args)
    q = _layers.apply_rotary(q, cos_btd, sin_btd)
    key = _layers.apply_rotary(key, cos_btd, sin_btd)
    if layer_cache is not None:
      cached_key, cached_value = layer_cache
      key = jax.lax.dynamic_update_slice(cached_key, key.astype(cached_key.dtype), (0, cache_index, 0, 0))
      value = jax.lax.dynamic_update_slice(cached_value, value.astype(cached_value.dtype), (0, cache_index, 0, 0))
      layer_cache = (key, value)
    attended = _layers.grouped_query_attention(q, key, value, bias_b1ts, dtype)
    out = jnp.einsum(
      "bthe,hed->btd", attended, param(self, "o_proj", ("heads", "head_dim", "embed"), (h, dh, d)).astype(dtype)
    )
    if cfg.o_bias:
      out = out + param(self, "o_bias", ("embed",), (d,), zeros).astype(dtype)
    hidden_btd = hidden_btd + out

    x = _layers.RMSNorm(cfg.rms_norm_eps, dtype, name="post_attention_norm")(hidden_btd)
    mlp_bias = cfg.mlp_bias
    gate = project("gate_proj", x, (d, f), ("embed", "mlp"), "btd,df->btf", (f,) if mlp_bias else None, ("mlp",))
    up = project("up_proj", x, (d, f), ("embed", "mlp"), "btd,df->btf", (f,) if mlp_bias else None, ("mlp",))
    down = project(
      "down_proj", nn.silu(gate) * up, (f, d), ("mlp", "embed"), "btf,fd->btd", (d,) if mlp_bias else None, ("embed",)
    )
    return hidden_btd + down, layer_cache


class LlamaModule(nn.Module):
  """A Llama-style decoder following the calling convention in `zett.models.family`."""

  config: LlamaConfig
  dtype: Any = jnp.float32
  remat: bool = False
  """Recompute each layer in the backward pass instead of keeping its activations (`nn.remat`): only the layer
  inputs stay in memory. A runtime switch, not part of the config, so exports are unaffected."""

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
    embedding_vd = param(self, "embed_tokens", ("vocab", "embed"), (cfg.vocab_size, cfg.hidden_size))
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if inputs_embeds is None:
      assert input_ids is not None  # exactly one of the two (checked above)
      hidden_btd = jnp.take(embedding_vd, input_ids, axis=0).astype(dtype)
    else:
      hidden_btd = inputs_embeds.astype(dtype)
    batch, length = hidden_btd.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((batch, length), jnp.int32)
    attention_mask = attention_mask.astype(jnp.int32)

    if cache is None:
      key_mask, query_offset, cache_index = attention_mask, 0, 0
      if position_ids is None:
        position_ids = _layers.positions_from_mask(attention_mask)
    else:
      cache_index = cache.index
      key_mask = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, cache_index))
      query_offset = cache_index
      if position_ids is None:
        all_positions = _layers.positions_from_mask(key_mask)
        position_ids = jax.lax.dynamic_slice(all_positions, (0, cache_index), (batch, length))
    inv_freq = _layers.rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_dict)
    cos_btd, sin_btd = _layers.rotary_cos_sin(position_ids, inv_freq)
    bias_b1ts = _layers.attention_bias(key_mask, query_offset, length, cfg.sliding_window)

    # prevent_cse=False is safe inside scan (its loop already keeps XLA from merging the recomputation with the
    # forward pass) and lets XLA optimise the recomputed layer.
    layer = nn.remat(_DecoderLayer, prevent_cse=False) if self.remat else _DecoderLayer
    layers = nn.scan(
      layer,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      # Flax leaves scan's in_axes unannotated with default 0, so pyright takes it to be an int.
      in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),  # pyright: ignore[reportArgumentType]
      length=cfg.num_hidden_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    layer_caches = None if cache is None else (cache.key, cache.value)
    hidden_btd, layer_caches = layers(cfg, dtype, name="layers")(
      hidden_btd, cos_btd, sin_btd, bias_b1ts, cache_index, layer_caches
    )
    hidden_btd = _layers.RMSNorm(cfg.rms_norm_eps, dtype, name="final_norm")(hidden_btd)

    new_cache = None
    if cache is not None:
      assert layer_caches is not None  # the layers return the caches they were given
      new_cache = KVCache(layer_caches[0], layer_caches[1], key_mask, cache.index + length)

    if not cfg.tie_word_embeddings:
      lm_head_vd = param(self, "lm_head", ("vocab", "embed"), (cfg.vocab_size, cfg.hidden_size))
    else:
      lm_head_vd = embedding_vd
    logits = None
    if compute_logits:
      if output_embeddings is not None:
        lm_head_vd = output_embeddings
      logits = _layers.vocabulary_logits(hidden_btd, lm_head_vd, output_bias, dtype)
    return ModelOutput(logits=logits, hidden_states=hidden_btd, cache=new_cache)


def make_module(config: LlamaConfig, dtype=jnp.float32, remat: bool = False) -> LlamaModule:
  return LlamaModule(config, dtype, remat)


def init_cache(config: LlamaConfig, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
  """An empty KV cache for `max_length` slots (prompt + generated tokens, padding included)."""
  return _layers.empty_kv_cache(
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
  abstract = abstract_params(config)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return jnp.ones(leaf.shape, jnp.float32)
    if "bias" in name:
      return jnp.zeros(leaf.shape, jnp.float32)
    return jnp.asarray(generator.normal(0.0, 0.02, leaf.shape).astype(np.float32))

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _abstract_variables(config: LlamaConfig):
  return jax.eval_shape(lambda: LlamaModule(config).init(jax.random.key(0), input_ids=jnp.zeros((1, 2), jnp.int32)))


def abstract_params(config: LlamaConfig) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter, without allocating any."""
  return nn.meta.unbox(_abstract_variables(config)["params"])


def logical_param_axes(config: LlamaConfig) -> Params:
  """The logical `PartitionSpec` of every parameter (same tree as the params), without allocating them."""
  return nn.get_partition_spec(_abstract_variables(config))["params"]


# --- Hugging Face name mapping --------------------------------------------------------------------------------------


def _layer_map(config: LlamaConfig) -> list[tuple[str, str, str]]:
  """(our name, HF name suffix, kind) per layer tensor; kind says how to transpose/reshape."""
  names = [
    ("input_norm/scale", "input_layernorm.weight", "vector"),
    ("post_attention_norm/scale", "post_attention_layernorm.weight", "vector"),
    ("q_proj", "self_attn.q_proj.weight", "in_heads"),
    ("k_proj", "self_attn.k_proj.weight", "in_kv"),
    ("v_proj", "self_attn.v_proj.weight", "in_kv"),
    ("o_proj", "self_attn.o_proj.weight", "out_heads"),
    ("gate_proj", "mlp.gate_proj.weight", "linear"),
    ("up_proj", "mlp.up_proj.weight", "linear"),
    ("down_proj", "mlp.down_proj.weight", "linear"),
  ]
  if config.qkv_bias:
    names += [
      ("q_bias", "self_attn.q_proj.bias", "bias_heads"),
      ("k_bias", "self_attn.k_proj.bias", "bias_kv"),
      ("v_bias", "self_attn.v_proj.bias", "bias_kv"),
    ]
  if config.o_bias:
    names += [("o_bias", "self_attn.o_proj.bias", "vector")]
  if config.mlp_bias:
    names += [(f"{n}_bias", f"mlp.{n}_proj.bias", "vector") for n in ("gate", "up", "down")]
  return names


def _hf_shape(config: LlamaConfig, kind: str, ours: str) -> tuple[int, ...]:
  d, h, k, dh, f = (
    config.hidden_size,
    config.num_attention_heads,
    config.num_key_value_heads,
    config.head_dim,
    config.intermediate_size,
  )
  return {
    "in_heads": (h * dh, d),
    "in_kv": (k * dh, d),
    "out_heads": (d, h * dh),
    "bias_heads": (h * dh,),
    "bias_kv": (k * dh,),
    "linear": {"gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}.get(ours),
    "vector": {"gate_bias": (f,), "up_bias": (f,)}.get(ours, (d,)),
  }[kind]


def _from_hf(config: LlamaConfig, kind: str, array: np.ndarray) -> np.ndarray:
  d, h, k, dh = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
  if kind == "in_heads":
    return array.T.reshape(d, h, dh)
  if kind == "in_kv":
    return array.T.reshape(d, k, dh)
  if kind == "out_heads":
    return array.T.reshape(h, dh, d)
  if kind == "bias_heads":
    return array.reshape(h, dh)
  if kind == "bias_kv":
    return array.reshape(k, dh)
  if kind == "linear":
    return array.T
  return array


def _to_hf(kind: str, array: np.ndarray) -> np.ndarray:
  if kind in ("in_heads", "in_kv"):
    return np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
  if kind == "out_heads":
    return np.ascontiguousarray(array.reshape(-1, array.shape[-1]).T)
  if kind in ("bias_heads", "bias_kv"):
    return array.reshape(-1)
  if kind == "linear":
    return np.ascontiguousarray(array.T)
  return array


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _get(tree: Mapping, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def params_from_hf(config: LlamaConfig, tensors: Mapping[str, np.ndarray]) -> Params:
  """{HF name: array} -> our params (arrays keep their dtype); raises MissingTensorError / ShapeError."""
  v, d = config.vocab_size, config.hidden_size
  params: dict[str, Any] = {
    "embed_tokens": take_tensor(tensors, "model.embed_tokens.weight", (v, d)),
    "final_norm": {"scale": take_tensor(tensors, "model.norm.weight", (d,))},
  }
  if not config.tie_word_embeddings:
    params["lm_head"] = take_tensor(tensors, "lm_head.weight", (v, d))
  layers: dict[str, Any] = {}
  for ours, hf_suffix, kind in _layer_map(config):
    per_layer = [
      _from_hf(config, kind, take_tensor(tensors, f"model.layers.{i}.{hf_suffix}", _hf_shape(config, kind, ours)))
      for i in range(config.num_hidden_layers)
    ]
    _set(layers, ours, np.stack(per_layer))
  params["layers"] = layers
  return params


def params_to_hf(config: LlamaConfig, params: Params) -> dict[str, np.ndarray]:
  params = jax.device_get(params)
  out = {
    "model.embed_tokens.weight": np.asarray(params["embed_tokens"]),
    "model.norm.weight": np.asarray(params["final_norm"]["scale"]),
  }
  if not config.tie_word_embeddings:
    out["lm_head.weight"] = np.asarray(params["lm_head"])
  for ours, hf_suffix, kind in _layer_map(config):
    stacked = np.asarray(_get(params["layers"], ours))
    for i in range(config.num_hidden_layers):
      out[f"model.layers.{i}.{hf_suffix}"] = _to_hf(kind, stacked[i])
  return out


def get_embeddings(config: LlamaConfig, params: Params) -> Embeddings:
  return Embeddings(params["embed_tokens"], None if config.tie_word_embeddings else params["lm_head"], None)


def set_embeddings(config: LlamaConfig, params: Params, embeddings: Embeddings) -> tuple[LlamaConfig, Params]:
  if embeddings.bias is not None:
    raise ValueError("Llama-style decoders have no LM-head bias")
  if (embeddings.output is None) != config.tie_word_embeddings:
    raise ValueError(f"output embeddings must be {'None (tied)' if config.tie_word_embeddings else 'given (untied)'}")
  params = dict(params, embed_tokens=embeddings.input)
  if embeddings.output is not None:
    params["lm_head"] = embeddings.output
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
