"""The published ZeTT hypernetwork's forward pass, in our own JAX code, over their Flax parameter tree.

Architecture (their `zett/model/__init__.py` `Hypernet` and `zett/model/hyper_roberta.py`, github.com/bminixhofer/zett):

  surface ids [V, L] -> base rows (input, concatenated with output rows for untied bases); ids >= the base
  vocabulary read a learned fallback table instead -> frozen rescaler (`in_scaler`, before the fallback choice)
  -> `input_projection` (dense, then a projector block) -> RoBERTa body: + learned positions 0..L-1 + token type 0,
  [+ one extra position holding the language embedding], embedding LayerNorm, post-LN layers with exact GELU,
  padding masked -> hidden state at position 0 -> `output_projection` (projector block, dense) for input embeddings,
  `output_projection_out` for output embeddings of untied bases -> frozen rescalers `scaler` / `out_scaler`;
  `bias_projection` (dense to 1) from the pooled state.
  A projector block is LayerNorm(x + dense2(gelu(dense1(x)))) with a gelu after dense2 too (tanh GELU, eps 1e-6).

The parameters keep their Flax names and layout (kernels [in, out]), so `flax_model.msgpack` loads without renaming;
the pure functions below read them directly (no module object: the layout is fixed by their checkpoints, so there is
nothing to initialise or train here).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from zett.hypernet.published_config import PublishedHypernetConfig
from zett.models.family import Embeddings


def expected_shapes(config: PublishedHypernetConfig) -> dict[str, tuple[int, ...]]:
  """Every parameter the forward pass reads: "/"-joined Flax path -> shape."""
  c, h, m = config, config.hidden_size, config.intermediate_size
  n_in, d = c.input_width, c.embedding_dim
  shapes: dict[str, tuple[int, ...]] = {}

  def dense(name, fan_in, fan_out):
    shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (fan_in, fan_out), (fan_out,)

  def norm(name, width):
    shapes[f"{name}/scale"], shapes[f"{name}/bias"] = (width,), (width,)

  def projector(name):
    dense(f"{name}/dense1", h, m)
    dense(f"{name}/dense2", m, h)
    norm(f"{name}/ln", h)

  shapes["fallback_embeddings/embedding"] = (max(c.num_extra_tokens, 1), n_in)  # "need at least one embedding"
  dense("input_projection/layers_0", n_in, h)
  projector("input_projection/layers_1")
  shapes["model/embeddings/position_embeddings/embedding"] = (c.num_positions, h)
  shapes["model/embeddings/token_type_embeddings/embedding"] = (1, h)
  norm("model/embeddings/LayerNorm", h)
  if c.num_languages:
    shapes["model/embeddings/lang_embedding/embedding"] = (c.num_languages, h)
  for i in range(c.num_layers):
    layer = f"model/encoder/layer/{i}"
    for part in ("query", "key", "value"):
      dense(f"{layer}/attention/self/{part}", h, h)
    dense(f"{layer}/attention/output/dense", h, h)
    norm(f"{layer}/attention/output/LayerNorm", h)
    dense(f"{layer}/intermediate/dense", h, m)
    dense(f"{layer}/output/dense", m, h)
    norm(f"{layer}/output/LayerNorm", h)
  projector("output_projection/layers_0")
  dense("output_projection/layers_1", h, n_in if c.single_head else d)
  if c.predict_output_embeddings and not c.single_head:
    projector("output_projection_out/layers_0")
    dense("output_projection_out/layers_1", h, d)
  if c.rescale_embeddings:
    for name, width in (("in_scaler", n_in), ("scaler", d)) + (
      (("out_scaler", d),) if c.predict_output_embeddings else ()
    ):
      shapes[f"{name}/w"], shapes[f"{name}/b"] = (1, width), (1, width)
  if c.has_bias_head:
    dense("bias_projection", h, 1)
  return shapes


def _dense(p, x):
  return x @ p["kernel"] + p["bias"]


def _layer_norm(p, x, eps):
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _projector(p, x, eps):
  h = jax.nn.gelu(_dense(p["dense2"], jax.nn.gelu(_dense(p["dense1"], x), approximate=True)), approximate=True)
  return _layer_norm(p["ln"], h + x, eps)


def _rescale(p, x):
  return p["w"] * x + p["b"]


def _attention(p, x_vlh, key_mask_vl, num_heads):
  v_, l_, h = x_vlh.shape
  head_dim = h // num_heads

  def heads(name):
    return _dense(p[name], x_vlh).reshape(v_, l_, num_heads, head_dim)

  q, k, v = heads("query"), heads("key"), heads("value")
  scores = jnp.einsum("vqnd,vknd->vnqk", q / math.sqrt(head_dim), k)
  # Their Flax body: masked keys get the float minimum added (a row with no real key attends uniformly).
  scores = scores + jnp.where(key_mask_vl[:, None, None, :], 0.0, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("vnqk,vknd->vqnd", probs, v).reshape(v_, l_, h)


def _body(config: PublishedHypernetConfig, p, x_vlh, mask_vl):
  e = p["embeddings"]
  length = x_vlh.shape[1]
  x = x_vlh + e["position_embeddings"]["embedding"][:length][None] + e["token_type_embeddings"]["embedding"][0]
  if config.num_languages:
    language = e["lang_embedding"]["embedding"][config.language_index]
    x = jnp.concatenate([x, jnp.broadcast_to(language, (x.shape[0], 1, x.shape[2]))], axis=1)
    mask_vl = jnp.concatenate([mask_vl, jnp.ones((mask_vl.shape[0], 1), bool)], axis=1)
  x = _layer_norm(e["LayerNorm"], x, config.layer_norm_eps)
  for i in range(config.num_layers):
    layer = p["encoder"]["layer"][str(i)]
    attended = _dense(
      layer["attention"]["output"]["dense"], _attention(layer["attention"]["self"], x, mask_vl, config.num_heads)
    )
    x = _layer_norm(layer["attention"]["output"]["LayerNorm"], attended + x, config.layer_norm_eps)
    inner = jax.nn.gelu(_dense(layer["intermediate"]["dense"], x), approximate=False)
    x = _layer_norm(layer["output"]["LayerNorm"], _dense(layer["output"]["dense"], inner) + x, config.layer_norm_eps)
  return x


def predict(
  config: PublishedHypernetConfig, params, surface_ids, surface_lengths, base: Embeddings, special_base_ids=None
) -> Embeddings:
  """Embeddings of V target tokens from their surface ids (same contract as `hypernet.model.predict`).

  Args:
    surface_ids: int32 [V, L], ids of the hypernetwork's byte-level base tokenizer (ids >= base_vocab_size are its
      extra tokens and read the fallback table).
    surface_lengths: int32 [V]; positions at or beyond a row's length are padding (their code masks the pad id).
    base: the frozen base embeddings ([base_vocab_size, D] input, output for untied bases, bias if the base has one).
    special_base_ids: optional int32 [V]; a row >= 0 takes that base row unchanged (special tokens).
  """
  c = config
  length = surface_ids.shape[1]
  if length > c.surface_length:
    raise ValueError(f"surface forms have length {length} > hn_surface_maxlen {c.surface_length}")
  if c.predict_output_embeddings and base.output is None:
    raise ValueError("this hypernetwork is for an untied base (separate output embeddings); the base has none")
  if c.predict_output_bias and base.bias is None:
    raise ValueError("this hypernetwork predicts an LM-head bias but the base has none")
  fallback = surface_ids >= c.base_vocab_size
  main_ids = jnp.clip(surface_ids, 0, c.base_vocab_size - 1)
  source = jnp.take(base.input, main_ids, axis=0).astype(jnp.float32)
  if c.predict_output_embeddings:
    assert base.output is not None  # checked above
    source = jnp.concatenate([source, jnp.take(base.output, main_ids, axis=0).astype(jnp.float32)], axis=-1)
  if c.rescale_embeddings:
    source = _rescale(params["in_scaler"], source)
  fallback_rows = jnp.take(
    params["fallback_embeddings"]["embedding"],
    jnp.clip(surface_ids - c.base_vocab_size, 0, max(c.num_extra_tokens, 1) - 1),
    axis=0,
  )
  x = jnp.where(fallback[..., None], fallback_rows, source)
  x = _projector(
    params["input_projection"]["layers_1"],
    _dense(params["input_projection"]["layers_0"], x),
    c.projector_layer_norm_eps,
  )
  mask = jnp.arange(length)[None, :] < surface_lengths[:, None]
  pooled = _body(c, params["model"], x, mask)[:, 0]

  def head(name):
    return _dense(params[name]["layers_1"], _projector(params[name]["layers_0"], pooled, c.projector_layer_norm_eps))

  pred_in = head("output_projection")
  pred_out = None
  if c.single_head:
    pred_in, rest = pred_in[:, : c.embedding_dim], pred_in[:, c.embedding_dim :]
    pred_out = rest if c.predict_output_embeddings else None
  elif c.predict_output_embeddings:
    pred_out = head("output_projection_out")
  if c.rescale_embeddings:
    pred_in = _rescale(params["scaler"], pred_in)
    if pred_out is not None:
      pred_out = _rescale(params["out_scaler"], pred_out)
  pred_bias = _dense(params["bias_projection"], pooled)[:, 0] if c.predict_output_bias else None

  if special_base_ids is not None:
    is_special = special_base_ids >= 0
    src = jnp.clip(special_base_ids, 0, base.input.shape[0] - 1)
    pred_in = jnp.where(is_special[:, None], jnp.take(base.input, src, axis=0).astype(jnp.float32), pred_in)
    if pred_out is not None:
      assert base.output is not None  # predicted only for untied bases (checked above)
      pred_out = jnp.where(is_special[:, None], jnp.take(base.output, src, axis=0).astype(jnp.float32), pred_out)
    if pred_bias is not None:
      assert base.bias is not None  # predicted only for bases with one (checked above)
      pred_bias = jnp.where(is_special, jnp.take(base.bias, src).astype(jnp.float32), pred_bias)
  return Embeddings(pred_in, pred_out, pred_bias)


def parameter_count(config: PublishedHypernetConfig) -> int:
  """Parameters the forward pass reads (for checking a config against a published file size)."""
  return sum(math.prod(shape) for shape in expected_shapes(config).values())
