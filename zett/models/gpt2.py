"""GPT-2 in Flax (linen): learned absolute positions, pre-LayerNorm blocks, tied (or untied) LM head.

Layers are scanned (`nn.scan`), so each layer parameter has a leading "layers" axis. Parameter tree
(shapes without the leading layer axis for `layers/*`):

  embed_tokens [V, D]; embed_positions [P, D]; lm_head [V, D] (untied only); final_norm/{scale,bias} [D]
  layers/ln_1/{scale,bias} [D], layers/ln_2/{scale,bias} [D]
  layers/q_proj, k_proj, v_proj [D, H, Dh] (+ q_bias, k_bias, v_bias [H, Dh]); o_proj [H, Dh, D] (+ o_bias [D])
  layers/fc_in [D, F] (+ fc_in_bias [F]); fc_out [F, D] (+ fc_out_bias [D])

Positions default to counting real tokens of the attention mask (so left padding does not shift them);
`transformers` counts slots instead, which agrees for right padding and unpadded rows. Positions past
`max_position_embeddings` have no learned row (the lookup yields NaN rather than silently clamping).
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
from zett.models._hf_layout import stack_layers, unstack_layers
from zett.models._layers import mlp, param
from zett.models._norm_act import LayerNorm, activation, check_activation
from zett.models.family import Embeddings, Family, ModelOutput, Params, register, take_tensor

__all__ = [
  "GPT2Config",
  "GPT2Module",
  "FAMILY",
  "config_from_hf",
  "config_to_hf",
  "init_cache",
  "init_params",
  "logical_param_axes",
  "make_module",
  "params_from_hf",
  "params_to_hf",
]


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 1024
  layer_norm_epsilon: float = 1e-5
  activation_function: str = "gelu_new"
  scale_attn_weights: bool = True
  """Divide attention scores by sqrt(head_dim) (True in every released GPT-2)."""
  scale_attn_by_inverse_layer_idx: bool = False
  """Also divide layer i's scores by i + 1 (Mistral/Stanford GPT-2 runs)."""
  tie_word_embeddings: bool = True
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
      )
    check_activation(self.activation_function, "activation_function")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


def config_from_hf(hf: Mapping[str, Any]) -> GPT2Config:
  """HF GPT-2 config.json dict -> GPT2Config; ValueError on options we do not implement."""
  if hf.get("add_cross_attention"):
    raise ValueError("GPT-2 with add_cross_attention=true is not supported")
  hidden = hf.get("n_embd", hf.get("hidden_size"))
  return GPT2Config(
    vocab_size=hf["vocab_size"],
    hidden_size=hidden,
    num_hidden_layers=hf.get("n_layer", hf.get("num_hidden_layers")),
    num_attention_heads=hf.get("n_head", hf.get("num_attention_heads")),
    intermediate_size=hf.get("n_inner") or 4 * hidden,
    max_position_embeddings=hf.get("n_positions", hf.get("max_position_embeddings", 1024)),
    layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
    activation_function=hf.get("activation_function", "gelu_new"),
    scale_attn_weights=bool(hf.get("scale_attn_weights", True)),
    scale_attn_by_inverse_layer_idx=bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
    bos_token_id=hf.get("bos_token_id"),
    eos_token_id=hf.get("eos_token_id"),
    pad_token_id=hf.get("pad_token_id"),
  )


def config_to_hf(config: GPT2Config) -> dict[str, Any]:
  """GPT2Config -> config.json dict that `transformers` loads as GPT2LMHeadModel."""
  return {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "vocab_size": config.vocab_size,
    "n_embd": config.hidden_size,
    "n_layer": config.num_hidden_layers,
    "n_head": config.num_attention_heads,
    "n_inner": config.intermediate_size,
    "n_positions": config.max_position_embeddings,
    "layer_norm_epsilon": config.layer_norm_epsilon,
    "activation_function": config.activation_function,
    "scale_attn_weights": config.scale_attn_weights,
    "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": config.tie_word_embeddings,
    "bos_token_id": config.bos_token_id,
    "eos_token_id": config.eos_token_id,
    "pad_token_id": config.pad_token_id,
  }


class _Block(nn.Module):
  config: GPT2Config
  dtype: Any = jnp.float32
  matmul_dtype: Any = None
  """Input dtype of the dense products (float32 accumulation; `_layers.dense`); None: `dtype`."""

  @nn.compact
  def __call__(self, hidden_btd, bias_b1ts, cache_index, layer_index, layer_cache):
    cfg, dtype = self.config, self.dtype
    d, h, dh, f = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size

    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="ln_1")(hidden_btd)
    query, key, value = qkv_projections(self, x, h, h, dh, dtype, bias=True, kv_axis="heads")
    # grouped_query_attention divides by sqrt(head_dim); fold GPT-2's other scalings into the query.
    query_scale = 1.0 if cfg.scale_attn_weights else float(np.sqrt(dh))
    if cfg.scale_attn_by_inverse_layer_idx:
      query_scale = query_scale / (layer_index + 1).astype(jnp.float32)
    if cfg.scale_attn_by_inverse_layer_idx or not cfg.scale_attn_weights:
      query = (query.astype(jnp.float32) * query_scale).astype(dtype)
    key, value, layer_cache = write_layer_cache(layer_cache, key, value, cache_index)
    attended_bthe = grouped_query_attention(query, key, value, bias_b1ts, dtype)
    hidden_btd = hidden_btd + output_projection(self, attended_bthe, d, dtype, bias=True)

    x = LayerNorm(cfg.layer_norm_epsilon, dtype, name="ln_2")(hidden_btd)
    x = mlp(self, x, f, activation(cfg.activation_function), dtype)
    return hidden_btd + x, layer_cache


class GPT2Module(nn.Module):
  """GPT-2 following the calling convention in `zett.models.family` (no output bias of its own)."""

  config: GPT2Config
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
    # Position table rows are not a sharded dimension; only its width is.
    positions_pd = param(self, "embed_positions", (None, "embed"), (cfg.max_position_embeddings, cfg.hidden_size))
    slots = _convention.decoder_slots(inputs.attention_mask_bt, position_ids, cache)
    hidden_btd = inputs.hidden_btd + jnp.take(positions_pd, slots.position_ids_bt, axis=0).astype(dtype)

    in_axes = (nn.broadcast, nn.broadcast, 0, 0)
    blocks = _layers.scanned_layers(_Block, cfg.num_hidden_layers, in_axes, self.remat)
    hidden_btd, layer_caches = blocks(cfg, dtype, self.matmul_dtype, name="layers")(
      hidden_btd, slots.bias_b1ts, slots.cache_index, jnp.arange(cfg.num_hidden_layers), _convention.layer_caches(cache)
    )
    hidden_btd = LayerNorm(cfg.layer_norm_epsilon, dtype, name="final_norm")(hidden_btd)
    logits = _convention.lm_head_logits(
      self, cfg, inputs, hidden_btd, dtype, output_embeddings, output_bias, compute_logits
    )
    new_cache = _convention.advanced_cache(cache, layer_caches, slots)
    return ModelOutput(logits=logits, hidden_states=hidden_btd, cache=new_cache)


def make_module(config: GPT2Config, dtype=jnp.float32, remat: bool = False) -> GPT2Module:
  return GPT2Module(config, dtype, remat)


def init_cache(config: GPT2Config, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
  """An empty KV cache for `max_length` slots (prompt + generated tokens, padding included)."""
  return empty_kv_cache(
    config.num_hidden_layers, batch_size, max_length, config.num_attention_heads, config.head_dim, dtype
  )


def init_params(config: GPT2Config, rng) -> Params:
  """Random float32 params (plain arrays; `logical_param_axes` gives their logical axis names)."""
  return _layers.init_module_params(GPT2Module(config), rng)


def logical_param_axes(config: GPT2Config) -> Params:
  """The logical `PartitionSpec` of every parameter (same tree as the params), without allocating them."""
  return _layers.module_logical_axes(GPT2Module(config))


# --- Hugging Face name mapping --------------------------------------------------------------------------------------
# HF GPT-2 uses Conv1D, whose weight is [in, out] (already our kernel layout), and fuses q/k/v into c_attn.


def _prefix(tensors: Mapping[str, Any]) -> str:
  # GPT2LMHeadModel saves "transformer.*"; the original hub checkpoints (GPT2Model) have no prefix.
  return "" if "transformer.wte.weight" not in tensors and "wte.weight" in tensors else "transformer."


def _layer_from_hf(config: GPT2Config, tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  d, h, dh, f = config.hidden_size, config.num_attention_heads, config.head_dim, config.intermediate_size
  layer: dict[str, Any] = {}
  for norm in ("ln_1", "ln_2"):
    layer[norm] = {
      "scale": take_tensor(tensors, f"{prefix}{norm}.weight", (d,)),
      "bias": take_tensor(tensors, f"{prefix}{norm}.bias", (d,)),
    }
  qkv_weight = np.asarray(take_tensor(tensors, f"{prefix}attn.c_attn.weight", (d, 3 * d)))
  qkv_bias = np.asarray(take_tensor(tensors, f"{prefix}attn.c_attn.bias", (3 * d,)))
  for i, name in enumerate("qkv"):
    layer[f"{name}_proj"] = qkv_weight[:, i * d : (i + 1) * d].reshape(d, h, dh)
    layer[f"{name}_bias"] = qkv_bias[i * d : (i + 1) * d].reshape(h, dh)
  layer["o_proj"] = np.asarray(take_tensor(tensors, f"{prefix}attn.c_proj.weight", (d, d))).reshape(h, dh, d)
  layer["o_bias"] = take_tensor(tensors, f"{prefix}attn.c_proj.bias", (d,))
  layer["fc_in_proj"] = take_tensor(tensors, f"{prefix}mlp.c_fc.weight", (d, f))
  layer["fc_in_bias"] = take_tensor(tensors, f"{prefix}mlp.c_fc.bias", (f,))
  layer["fc_out_proj"] = take_tensor(tensors, f"{prefix}mlp.c_proj.weight", (f, d))
  layer["fc_out_bias"] = take_tensor(tensors, f"{prefix}mlp.c_proj.bias", (d,))
  return layer


def _layer_to_hf(layer: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  out = {}
  for norm in ("ln_1", "ln_2"):
    out[f"{prefix}{norm}.weight"] = layer[norm]["scale"]
    out[f"{prefix}{norm}.bias"] = layer[norm]["bias"]
  d = layer["o_proj"].shape[-1]
  out[f"{prefix}attn.c_attn.weight"] = np.concatenate([layer[f"{n}_proj"].reshape(d, d) for n in "qkv"], axis=1)
  out[f"{prefix}attn.c_attn.bias"] = np.concatenate([layer[f"{n}_bias"].reshape(d) for n in "qkv"])
  out[f"{prefix}attn.c_proj.weight"] = layer["o_proj"].reshape(d, d)
  out[f"{prefix}attn.c_proj.bias"] = layer["o_bias"]
  out[f"{prefix}mlp.c_fc.weight"] = layer["fc_in_proj"]
  out[f"{prefix}mlp.c_fc.bias"] = layer["fc_in_bias"]
  out[f"{prefix}mlp.c_proj.weight"] = layer["fc_out_proj"]
  out[f"{prefix}mlp.c_proj.bias"] = layer["fc_out_bias"]
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def params_from_hf(config: GPT2Config, tensors: Mapping[str, np.ndarray]) -> Params:
  """{HF name: array} -> our params (arrays keep their dtype); raises MissingTensorError / ShapeError."""
  v, d, p = config.vocab_size, config.hidden_size, config.max_position_embeddings
  prefix = _prefix(tensors)
  params: dict[str, Any] = {
    "embed_tokens": take_tensor(tensors, f"{prefix}wte.weight", (v, d)),
    "embed_positions": take_tensor(tensors, f"{prefix}wpe.weight", (p, d)),
    "final_norm": {
      "scale": take_tensor(tensors, f"{prefix}ln_f.weight", (d,)),
      "bias": take_tensor(tensors, f"{prefix}ln_f.bias", (d,)),
    },
  }
  if not config.tie_word_embeddings:
    params["lm_head"] = take_tensor(tensors, "lm_head.weight", (v, d))
  per_layer = [_layer_from_hf(config, tensors, f"{prefix}h.{i}.") for i in range(config.num_hidden_layers)]
  params["layers"] = stack_layers(per_layer)
  return params


def params_to_hf(config: GPT2Config, params: Params) -> dict[str, np.ndarray]:
  """Our params -> {HF name: array} as GPT2LMHeadModel names them (lm_head.weight only when untied)."""
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
  out = {
    "transformer.wte.weight": params["embed_tokens"],
    "transformer.wpe.weight": params["embed_positions"],
    "transformer.ln_f.weight": params["final_norm"]["scale"],
    "transformer.ln_f.bias": params["final_norm"]["bias"],
  }
  if not config.tie_word_embeddings:
    out["lm_head.weight"] = params["lm_head"]
  for i, layer in enumerate(unstack_layers(params["layers"], config.num_hidden_layers)):
    out.update(_layer_to_hf(layer, f"transformer.h.{i}."))
  return out


def set_embeddings(config: GPT2Config, params: Params, embeddings: Embeddings) -> tuple[GPT2Config, Params]:
  """New vocabulary-sized params; `output=None` ties the LM head to the input embeddings, else unties it."""
  if embeddings.bias is not None:
    raise ValueError("GPT-2 has no LM-head bias; Embeddings.bias must be None")
  params = with_embeddings(params, embeddings)
  config = dataclasses.replace(
    config, vocab_size=int(embeddings.input.shape[0]), tie_word_embeddings=embeddings.output is None
  )
  return config, params


FAMILY = register(
  Family(
    name="gpt2",
    model_types=("gpt2",),
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
