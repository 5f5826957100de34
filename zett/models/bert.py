"""BERT, RoBERTa and XLM-RoBERTa masked LMs in Flax (linen): one post-LayerNorm encoder, three name maps.

The three differ only in Hugging Face tensor names, the first position id (RoBERTa/XLM-R start real
tokens at `pad_token_id + 1`) and the LM head's activation (BERT uses `hidden_act`, RoBERTa exact gelu).

Layers are scanned (`nn.scan`), so each layer parameter has a leading "layers" axis. Parameter tree
(shapes without the leading layer axis for `layers/*`):

  embed_tokens [V, D]; embed_positions [P, D]; embed_token_types [TV, D]; embed_norm/{scale,bias} [D]
  layers/q_proj, k_proj, v_proj [D, H, Dh] (+ *_bias [H, Dh]); o_proj [H, Dh, D] (+ o_bias [D]); attention_norm
  layers/fc_in_proj [D, F] (+ fc_in_bias [F]); fc_out_proj [F, D] (+ fc_out_bias [D]); output_norm
  lm_head_transform [D, D] (+ lm_head_transform_bias [D]); lm_head_norm; lm_head_bias [V]; lm_head [V, D] (untied)

`hidden_states` in the output is the LM head's transform (dense + activation + LayerNorm) of the last
encoder layer, so that `logits = hidden_states @ output_embeddings.T + output_bias` exactly as for decoders.
Passing `output_embeddings` (a new vocabulary) without `output_bias` means no bias: the stored bias belongs
to the stored vocabulary. `output_bias` alone replaces the stored bias.
Positions default to counting real tokens of the attention mask; `transformers` BERT counts slots, which
agrees for right padding (the usual layout for encoders) and unpadded rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from zett.models import _convention, _layers
from zett.models._attention import grouped_query_attention, output_projection, padding_bias, qkv_projections
from zett.models._hf_layout import LayerTensor, layers_from_hf, layers_to_hf
from zett.models._layers import dense, mlp, param
from zett.models._norm_act import LayerNorm, activation, check_activation
from zett.models.family import Embeddings, Family, ModelOutput, Params, register, take_tensor

__all__ = [
  "BertConfig",
  "BertModule",
  "FAMILY",
  "config_from_hf",
  "config_to_hf",
  "init_params",
  "logical_param_axes",
  "make_module",
  "params_from_hf",
  "params_to_hf",
]

_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_ARCHITECTURES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM", "xlm-roberta": "XLMRobertaForMaskedLM"}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  tie_word_embeddings: bool = True
  model_type: str = "bert"
  """"bert", "roberta" or "xlm-roberta": picks tensor names, position offset and LM-head activation."""

  def __post_init__(self):
    if self.model_type not in _MODEL_TYPES:
      raise ValueError(f"model_type {self.model_type!r} is not one of {', '.join(_MODEL_TYPES)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
      )
    check_activation(self.hidden_act, "hidden_act")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def is_roberta(self) -> bool:
    return self.model_type != "bert"

  @property
  def first_position_id(self) -> int:
    """Position id of the first real token: RoBERTa/XLM-R reserve 0..pad_token_id (fairseq heritage)."""
    return self.pad_token_id + 1 if self.is_roberta else 0

  @property
  def lm_head_act(self) -> str:
    return "gelu" if self.is_roberta else self.hidden_act


def config_from_hf(hf: Mapping[str, Any]) -> BertConfig:
  """HF BERT/RoBERTa/XLM-R config.json dict -> BertConfig; ValueError on options we do not implement."""
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    raise ValueError("decoder / cross-attention BERT variants are not supported (masked LMs only)")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported (absolute only)")
  model_type = hf.get("model_type", "bert")
  return BertConfig(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_hidden_layers=hf["num_hidden_layers"],
    num_attention_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    max_position_embeddings=hf.get("max_position_embeddings", 512),
    type_vocab_size=hf.get("type_vocab_size", 2),
    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
    hidden_act=hf.get("hidden_act", "gelu"),
    pad_token_id=hf.get("pad_token_id", 1 if model_type != "bert" else 0) or 0,
    bos_token_id=hf.get("bos_token_id"),
    eos_token_id=hf.get("eos_token_id"),
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
    model_type=model_type,
  )


def config_to_hf(config: BertConfig) -> dict[str, Any]:
  """BertConfig -> config.json dict that `transformers` loads as *ForMaskedLM."""
  return {
    "architectures": [_ARCHITECTURES[config.model_type]],
    "model_type": config.model_type,
    "vocab_size": config.vocab_size,
    "hidden_size": config.hidden_size,
    "num_hidden_layers": config.num_hidden_layers,
    "num_attention_heads": config.num_attention_heads,
    "intermediate_size": config.intermediate_size,
    "max_position_embeddings": config.max_position_embeddings,
    "type_vocab_size": config.type_vocab_size,
    "layer_norm_eps": config.layer_norm_eps,
    "hidden_act": config.hidden_act,
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "pad_token_id": config.pad_token_id,
    "bos_token_id": config.bos_token_id,
    "eos_token_id": config.eos_token_id,
    "tie_word_embeddings": config.tie_word_embeddings,
  }


class _EncoderLayer(nn.Module):
  config: BertConfig
  dtype: Any = jnp.float32
  matmul_dtype: Any = None
  """Input dtype of the dense products (float32 accumulation; `_layers.dense`); None: `dtype`."""

  @nn.compact
  def __call__(self, hidden_btd, bias_b1ts):
    cfg, dtype = self.config, self.dtype
    d, h, dh, f = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size

    query, key, value = qkv_projections(self, hidden_btd, h, h, dh, dtype, bias=True, kv_axis="heads")
    attended_bthe = grouped_query_attention(query, key, value, bias_b1ts, dtype)
    out = output_projection(self, attended_bthe, d, dtype, bias=True)
    hidden_btd = LayerNorm(cfg.layer_norm_eps, dtype, name="attention_norm")(hidden_btd + out)
    x = mlp(self, hidden_btd, f, activation(cfg.hidden_act), dtype)
    return LayerNorm(cfg.layer_norm_eps, dtype, name="output_norm")(hidden_btd + x), None


class BertModule(nn.Module):
  """BERT / RoBERTa / XLM-R masked LM following the calling convention in `zett.models.family`.

  Encoders take no cache (`cache` must be None). Extra keyword: `token_type_ids` int32 [B, T] (default 0).
  """

  config: BertConfig
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
    cache=None,
    compute_logits=True,
    token_type_ids=None,
  ):
    cfg, dtype = self.config, self.dtype
    d, v = cfg.hidden_size, cfg.vocab_size
    if cache is not None:
      raise ValueError(f"{cfg.model_type} is an encoder: it takes no KV cache")
    inputs = _convention.embed_inputs(self, cfg, dtype, input_ids, inputs_embeds, attention_mask)
    # Position and token-type table rows are not a sharded dimension; only their width is.
    positions_pd = param(self, "embed_positions", (None, "embed"), (cfg.max_position_embeddings, d))
    token_types_nd = param(self, "embed_token_types", (None, "embed"), (cfg.type_vocab_size, d))
    attention_mask = inputs.attention_mask_bt
    if position_ids is None:
      # Padding slots get the padding position (RoBERTa's padding_idx row; row 0 for BERT).
      position_ids = jnp.where(
        attention_mask > 0,
        _convention.positions_from_mask(attention_mask) + cfg.first_position_id,
        max(cfg.first_position_id - 1, 0),
      )
    if token_type_ids is None:
      token_type_ids = jnp.zeros(attention_mask.shape, jnp.int32)
    hidden_btd = (
      inputs.hidden_btd
      + jnp.take(token_types_nd, token_type_ids, axis=0).astype(dtype)
      + jnp.take(positions_pd, position_ids, axis=0).astype(dtype)
    )
    hidden_btd = LayerNorm(cfg.layer_norm_eps, dtype, name="embed_norm")(hidden_btd)

    layers = _layers.scanned_layers(_EncoderLayer, cfg.num_hidden_layers, (nn.broadcast,), self.remat)
    hidden_btd, _ = layers(cfg, dtype, self.matmul_dtype, name="layers")(hidden_btd, padding_bias(attention_mask))

    # The LM head's transform; its output is what the (swappable) vocabulary projection reads.
    x = dense(self, "lm_head_transform", hidden_btd, "btd,de->bte", (d, d), ("embed", None), dtype, (d,), ("embed",))
    hidden_btd = LayerNorm(cfg.layer_norm_eps, dtype, name="lm_head_norm")(activation(cfg.lm_head_act)(x))
    bias_v = param(self, "lm_head_bias", ("vocab",), (v,), nn.initializers.zeros)
    logits = _convention.lm_head_logits(
      self, cfg, inputs, hidden_btd, dtype, output_embeddings, output_bias, compute_logits, bias_v
    )
    return ModelOutput(logits=logits, hidden_states=hidden_btd, cache=None)


def make_module(config: BertConfig, dtype=jnp.float32, remat: bool = False) -> BertModule:
  return BertModule(config, dtype, remat)


def init_params(config: BertConfig, rng) -> Params:
  """Random float32 params (plain arrays; `logical_param_axes` gives their logical axis names)."""
  return _layers.init_module_params(BertModule(config), rng)


def logical_param_axes(config: BertConfig) -> Params:
  """The logical `PartitionSpec` of every parameter (same tree as the params), without allocating them."""
  return _layers.module_logical_axes(BertModule(config))


# --- Hugging Face name mapping --------------------------------------------------------------------------------------
# torch Linear weights are [out, in]; ours are [in, out] with heads split out.


def _base_prefix(config: BertConfig) -> str:
  return "roberta." if config.is_roberta else "bert."


def _head_prefix(config: BertConfig) -> str:
  return "lm_head." if config.is_roberta else "cls.predictions."


def _take(tensors: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
  # Original Google BERT checkpoints name LayerNorm parameters gamma/beta.
  legacy = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
  if name not in tensors and legacy != name and legacy in tensors:
    name = legacy
  return np.asarray(take_tensor(tensors, name, shape))


class _Tensor(NamedTuple):
  """A param outside the layers ("/"-separated path, our shape) and the Hugging Face tensor it is."""

  ours: str
  hf: str
  shape: tuple[int, ...]
  transposed: bool = False
  """A torch Linear weight: [out, in] in the checkpoint, [in, out] here."""


def _top_level_tensors(config: BertConfig) -> list[_Tensor]:
  """Every param outside the layers, as both directions name it, but the LM-head bias: a checkpoint may keep that
  under either of two names (`params_from_hf`)."""
  v, d = config.vocab_size, config.hidden_size
  base, head = _base_prefix(config), _head_prefix(config)
  norm = "layer_norm" if config.is_roberta else "transform.LayerNorm"
  dense = "dense" if config.is_roberta else "transform.dense"
  tensors = [
    _Tensor("embed_tokens", f"{base}embeddings.word_embeddings.weight", (v, d)),
    _Tensor("embed_positions", f"{base}embeddings.position_embeddings.weight", (config.max_position_embeddings, d)),
    _Tensor("embed_token_types", f"{base}embeddings.token_type_embeddings.weight", (config.type_vocab_size, d)),
    _Tensor("embed_norm/scale", f"{base}embeddings.LayerNorm.weight", (d,)),
    _Tensor("embed_norm/bias", f"{base}embeddings.LayerNorm.bias", (d,)),
    _Tensor("lm_head_transform", f"{head}{dense}.weight", (d, d), transposed=True),
    _Tensor("lm_head_transform_bias", f"{head}{dense}.bias", (d,)),
    _Tensor("lm_head_norm/scale", f"{head}{norm}.weight", (d,)),
    _Tensor("lm_head_norm/bias", f"{head}{norm}.bias", (d,)),
  ]
  if not config.tie_word_embeddings:
    tensors.append(_Tensor("lm_head", f"{head}decoder.weight", (v, d)))
  return tensors


def _layer_map(config: BertConfig) -> list[LayerTensor]:
  d, h, dh, f = config.hidden_size, config.num_attention_heads, config.head_dim, config.intermediate_size
  names = []
  for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
    names += [
      LayerTensor(f"{ours}_proj", f"attention.self.{theirs}.weight", (d, h, dh), 1),
      LayerTensor(f"{ours}_bias", f"attention.self.{theirs}.bias", (h, dh), 0),
    ]
  return names + [
    LayerTensor("o_proj", "attention.output.dense.weight", (h, dh, d), 2),
    LayerTensor("o_bias", "attention.output.dense.bias", (d,), 0),
    LayerTensor("attention_norm/scale", "attention.output.LayerNorm.weight", (d,), 0),
    LayerTensor("attention_norm/bias", "attention.output.LayerNorm.bias", (d,), 0),
    LayerTensor("fc_in_proj", "intermediate.dense.weight", (d, f), 1),
    LayerTensor("fc_in_bias", "intermediate.dense.bias", (f,), 0),
    LayerTensor("fc_out_proj", "output.dense.weight", (f, d), 1),
    LayerTensor("fc_out_bias", "output.dense.bias", (d,), 0),
    LayerTensor("output_norm/scale", "output.LayerNorm.weight", (d,), 0),
    LayerTensor("output_norm/bias", "output.LayerNorm.bias", (d,), 0),
  ]


def _layer_prefixes(config: BertConfig) -> list[str]:
  return [f"{_base_prefix(config)}encoder.layer.{i}." for i in range(config.num_hidden_layers)]


def params_from_hf(config: BertConfig, tensors: Mapping[str, np.ndarray]) -> Params:
  """{HF name: array} -> our params; raises MissingTensorError / ShapeError naming the tensor.

  Needs the masked-LM head (a bare BertModel/RobertaModel checkpoint has none). Extra tensors (pooler,
  next-sentence head) are ignored.
  """
  head = _head_prefix(config)
  # The forward pass reads decoder.bias; HF ties it to `bias`, and a tied save may keep either.
  bias_names = [f"{head}bias", f"{head}decoder.bias"]
  if not config.tie_word_embeddings:
    bias_names.reverse()
  bias_name = next((n for n in bias_names if n in tensors), bias_names[0])
  flat = {}
  for tensor in _top_level_tensors(config):
    array = _take(tensors, tensor.hf, tensor.shape[::-1] if tensor.transposed else tensor.shape)
    flat[tensor.ours] = array.T if tensor.transposed else array
  params: dict[str, Any] = traverse_util.unflatten_dict(flat, sep="/")
  params["lm_head_bias"] = _take(tensors, bias_name, (config.vocab_size,))
  params["layers"] = layers_from_hf(tensors, _layer_map(config), _layer_prefixes(config), take=_take)
  return params


def params_to_hf(config: BertConfig, params: Params) -> dict[str, np.ndarray]:
  """Our params -> {HF name: array} as Bert/Roberta/XLMRobertaForMaskedLM name them."""
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
  head = _head_prefix(config)
  top_level = {key: value for key, value in params.items() if key != "layers"}
  flat = {path: np.asarray(array) for path, array in traverse_util.flatten_dict(top_level, sep="/").items()}
  out = {
    tensor.hf: np.ascontiguousarray(flat[tensor.ours].T) if tensor.transposed else flat[tensor.ours]
    for tensor in _top_level_tensors(config)
  }
  out[f"{head}bias"] = params["lm_head_bias"]
  if not config.tie_word_embeddings:
    # Untied, transformers keeps decoder.bias apart from `bias` and the forward pass reads decoder.bias.
    out[f"{head}decoder.bias"] = params["lm_head_bias"]
  return out | layers_to_hf(params["layers"], _layer_map(config), _layer_prefixes(config))


def get_embeddings(config: BertConfig, params: Params) -> Embeddings:
  return _convention.get_embeddings(config, params, params["lm_head_bias"])


def set_embeddings(config: BertConfig, params: Params, embeddings: Embeddings) -> tuple[BertConfig, Params]:
  """New vocabulary-sized params; `output=None` ties the decoder to the input embeddings, `bias=None` zeroes it."""
  vocab_size = int(embeddings.input.shape[0])
  params = _convention.with_embeddings(params, embeddings)
  bias = embeddings.bias
  if bias is None:
    bias = jnp.zeros((vocab_size,), jnp.asarray(embeddings.input).dtype)
  if tuple(bias.shape) != (vocab_size,):
    raise ValueError(f"output bias has shape {tuple(bias.shape)}, expected ({vocab_size},)")
  params["lm_head_bias"] = bias
  config = dataclasses.replace(config, vocab_size=vocab_size, tie_word_embeddings=embeddings.output is None)
  return config, params


FAMILY = register(
  Family(
    name="bert",
    model_types=_MODEL_TYPES,
    is_causal=False,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    make_module=make_module,
    params_from_hf=params_from_hf,
    params_to_hf=params_to_hf,
    get_embeddings=get_embeddings,
    set_embeddings=set_embeddings,
    init_cache=None,
  )
)
