"""The hypernetwork: a small transformer encoder over a token's base-subtoken spelling.

For each target token, its surface form (up to L base subtoken ids) indexes the frozen base
embeddings; a 3-layer encoder reads them and, pooled at position 0, predicts the token's input
embedding (plus output embedding for untied bases, plus LM-head bias where the base has one).

Residual parameterisation: every head predicts a *correction* to a heuristic (the mean, or the
first, of the subtoken embeddings) and its last layer starts at zero, so at initialisation the
prediction equals the heuristic exactly and no identity warm-up is needed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zett.hypernet import published_model
from zett.hypernet.config import REFERENCE_VOCAB_SIZE, HypernetConfig
from zett.hypernet.published_config import PublishedHypernetConfig
from zett.models.family import Embeddings

# Logical axis names of hypernetwork parameters (the training sharding rules map these).
LOGICAL_AXES = ("hn_input", "hn_embed", "hn_heads", "hn_head_dim", "hn_mlp", "hn_out", "hn_position")

_NEG = -1e9
_LECUN_NORMAL = nn.initializers.lecun_normal()


def _dense(features, names, name, kernel_init=_LECUN_NORMAL, dtype=jnp.float32, use_bias=True):
  return nn.Dense(
    features,
    name=name,
    dtype=dtype,
    use_bias=use_bias,
    kernel_init=nn.with_logical_partitioning(kernel_init, names),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:]),
  )


class _EncoderLayer(nn.Module):
  config: HypernetConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_vlh, key_mask_vl):
    c = self.config
    h, nh = c.body_hidden_size, c.body_num_heads
    hd = h // nh
    y = nn.LayerNorm(name="attention_norm", dtype=self.dtype)(x_vlh)
    qkv = nn.DenseGeneral(
      (3, nh, hd),
      name="qkv",
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("hn_embed", None, "hn_heads", "hn_head_dim")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, "hn_heads", "hn_head_dim")),
    )(y)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [V, L, H, hd]
    scores = jnp.einsum("vqhd,vkhd->vhqk", q, k).astype(jnp.float32) / jnp.sqrt(hd).astype(jnp.float32)
    scores = jnp.where(key_mask_vl[:, None, None, :], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    attended = jnp.einsum("vhqk,vkhd->vqhd", probs, v)
    out = nn.DenseGeneral(
      h,
      axis=(-2, -1),
      name="attention_out",
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("hn_heads", "hn_head_dim", "hn_embed")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("hn_embed",)),
    )(attended)
    x_vlh = x_vlh + out
    y = nn.LayerNorm(name="mlp_norm", dtype=self.dtype)(x_vlh)
    y = _dense(c.body_mlp_size, ("hn_embed", "hn_mlp"), "mlp_in", dtype=self.dtype)(y)
    y = nn.gelu(y)
    y = _dense(h, ("hn_mlp", "hn_embed"), "mlp_out", dtype=self.dtype)(y)
    return x_vlh + y


def _heuristic(rows_vld, mask_vl, kind: str):
  """Mean (or first) of the subtoken rows of each target token."""
  if kind == "first":
    return rows_vld[:, 0]
  weights = mask_vl.astype(rows_vld.dtype)
  count = jnp.maximum(weights.sum(-1), 1.0).reshape((-1,) + (1,) * (rows_vld.ndim - 2))
  return jnp.einsum("vl,vl...->v...", weights, rows_vld) / count


def vocab_size_feature(vocab_size) -> jax.Array:
  """log2(vocab_size / REFERENCE_VOCAB_SIZE) as float32; 0 for None."""
  if vocab_size is None:
    return jnp.zeros((), jnp.float32)
  return jnp.log2(jnp.asarray(vocab_size, jnp.float32) / REFERENCE_VOCAB_SIZE)


def _needs_encoder(config: HypernetConfig, surface_lengths):
  """Rows whose prediction comes from the encoder (the others copy a base row or are padding)."""
  return surface_lengths >= (2 if config.keep_base_tokens else 1)


def check_buckets(config: HypernetConfig, buckets) -> tuple[tuple[int, int], ...]:
  """`buckets` as a tuple of (max_length, capacity) pairs; raises ValueError for an unusable spec."""
  buckets = tuple((int(length), int(capacity)) for length, capacity in buckets)
  lengths = [length for length, _ in buckets]
  if not buckets or lengths != sorted(set(lengths)) or lengths[0] < 1 or lengths[-1] < config.surface_length:
    raise ValueError(
      f"encoder buckets {list(buckets)}: need ascending, distinct max lengths >= 1, the last >= "
      f"surface_length {config.surface_length}"
    )
  if any(capacity < 1 for _, capacity in buckets):
    raise ValueError(f"encoder buckets {list(buckets)}: every capacity must be >= 1")
  return tuple((min(length, config.surface_length), capacity) for length, capacity in buckets)


def bucket_rows(config: HypernetConfig, surface_lengths, buckets):
  """[(row indices int32 [capacity], max_length)] per bucket; unused slots hold V (one past the last row)."""
  need = _needs_encoder(config, surface_lengths)
  out, lower = [], 0
  for length, capacity in check_buckets(config, buckets):
    chosen = need & (surface_lengths > lower) & (surface_lengths <= length)
    out.append((jnp.nonzero(chosen, size=capacity, fill_value=surface_lengths.shape[0])[0], length))
    lower = length
  return out


def bucket_classes(config: HypernetConfig, surface_lengths, buckets) -> np.ndarray:
  """Host side: 0 for rows the encoder never sees, i + 1 for rows of bucket i (the same split as `bucket_rows`)."""
  lengths = np.asarray(surface_lengths)
  edges = np.asarray([length for length, _ in check_buckets(config, buckets)])
  return np.where(np.asarray(_needs_encoder(config, lengths)), np.searchsorted(edges, lengths, side="left") + 1, 0)


def bucket_overflow(config: HypernetConfig, surface_lengths, buckets) -> list[int]:
  """Rows beyond each bucket's capacity (host side); all zero means the bucketed encoder sees every row it needs."""
  buckets = check_buckets(config, buckets)
  counts = np.bincount(bucket_classes(config, surface_lengths, buckets), minlength=len(buckets) + 1)[1:]
  return [max(0, int(count) - capacity) for count, (_, capacity) in zip(counts, buckets)]


class Hypernet(nn.Module):
  """Predicts embeddings of target tokens from their base-subtoken spellings.

  Call: `apply({"params": p}, surface_ids, surface_lengths, base, special_base_ids=None, buckets=None,
  vocab_size=None)`.

  Args:
    surface_ids: int32 [V, L] base-vocabulary ids spelling each target token (padding ignored).
    surface_lengths: int32 [V] number of real subtokens per row (0 = an unused padding row).
    base: the frozen base `Embeddings` (input [Vb, D], output [Vb, D] or None, bias [Vb] or None).
    special_base_ids: optional int32 [V]; a row >= 0 takes that base row unchanged (special tokens).
    buckets: optional static `((max_length, capacity), ...)`, ascending lengths, the last >= L. The encoder then runs
      only on the rows that need it (spelled by >= 2 subtokens with `keep_base_tokens`, else >= 1), each bucket's
      rows packed into `capacity` slots of `max_length` positions instead of V x L padded ones. The caller
      guarantees that no bucket holds more rows than its capacity (`bucket_overflow` counts them); the predictions
      equal the padded path's.
    vocab_size: size of the whole target vocabulary these rows belong to (a scalar, traced or not), seen only with
      `config.condition_on_vocab_size`; None stands for `REFERENCE_VOCAB_SIZE`.

  Returns:
    `Embeddings` for the V target tokens (output/bias present only when the config predicts them).
  """

  config: HypernetConfig
  dtype: Any = jnp.float32
  remat: bool = False
  """Recompute each encoder layer in the backward pass instead of keeping its activations (`jax.checkpoint` in a
  scan); a training memory switch, not part of `HypernetConfig`, so saved hypernetworks are unaffected."""

  @nn.compact
  def __call__(
    self, surface_ids, surface_lengths, base: Embeddings, special_base_ids=None, buckets=None, vocab_size=None
  ):
    c = self.config
    V, L = surface_ids.shape
    if L > c.surface_length:
      raise ValueError(f"surface forms have length {L} > configured surface_length {c.surface_length}")
    base_out = base.output if base.output is not None else base.input
    mask_vl = jnp.arange(L)[None, :] < surface_lengths[:, None]
    ids = jnp.clip(surface_ids, 0, base.input.shape[0] - 1)
    in_rows = jnp.take(base.input, ids, axis=0).astype(jnp.float32)  # [V, L, D]
    out_rows = jnp.take(base_out, ids, axis=0).astype(jnp.float32) if c.predict_output_embeddings else None
    features = in_rows if out_rows is None else jnp.concatenate([in_rows, out_rows], axis=-1)

    projection = _dense(c.body_hidden_size, ("hn_input", "hn_embed"), "input_projection", dtype=self.dtype)
    positions = self.param(
      "position_embeddings",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ("hn_position", "hn_embed")),
      (c.surface_length, c.body_hidden_size),
      unbox=True,  # the default; saying it selects the overload of Flax's `param` typed as the unboxed array
    )
    offset = positions
    if c.condition_on_vocab_size:
      per_doubling = self.param(
        "vocab_size_embedding",
        nn.with_logical_partitioning(nn.initializers.zeros_init(), ("hn_embed",)),
        (c.body_hidden_size,),
        unbox=True,
      )
      offset = positions + vocab_size_feature(vocab_size) * per_doubling
    rematerialise = self.remat and c.num_layers and not self.is_initializing()
    layers = [] if rematerialise else [_EncoderLayer(c, self.dtype, name=f"layer_{i}") for i in range(c.num_layers)]
    final_norm = nn.LayerNorm(name="final_norm", dtype=self.dtype)

    def encode(features_rlf, lengths_r):
      length = features_rlf.shape[1]
      x = projection(features_rlf.astype(self.dtype)) + offset[:length].astype(self.dtype)[None]
      # Padding rows (length 0) still attend to position 0 so softmax stays finite.
      key_mask = (jnp.arange(length)[None, :] < lengths_r[:, None]).at[:, 0].set(True)
      if rematerialise:
        x = self._rematerialised_layers(x, key_mask)
      for layer in layers:
        x = layer(x, key_mask)
      return final_norm(x[:, 0])

    if buckets is None:
      pooled = encode(features, surface_lengths)
    else:
      pooled = jnp.zeros((V, c.body_hidden_size), self.dtype)
      for rows, bucket_length in bucket_rows(c, surface_lengths, buckets):
        safe_rows = jnp.minimum(rows, V - 1)  # fill slots (= V) read any row; their results are dropped below
        encoded = encode(features[safe_rows, :bucket_length], surface_lengths[safe_rows])
        pooled = pooled.at[rows].set(encoded.astype(pooled.dtype), mode="drop")

    predicted = jnp.ones((V, 1), bool)
    if c.keep_base_tokens:
      predicted = (surface_lengths != 1)[:, None]
    zeros = nn.initializers.zeros_init()
    delta_in = _dense(c.embedding_dim, ("hn_embed", "hn_out"), "input_head", zeros, self.dtype)(pooled)
    pred_in = _heuristic(in_rows, mask_vl, c.heuristic) + jnp.where(predicted, delta_in.astype(jnp.float32), 0.0)
    pred_out = None
    if c.predict_output_embeddings:
      delta_out = _dense(c.embedding_dim, ("hn_embed", "hn_out"), "output_head", zeros, self.dtype)(pooled)
      pred_out = _heuristic(out_rows, mask_vl, c.heuristic) + jnp.where(predicted, delta_out.astype(jnp.float32), 0.0)
    pred_bias = None
    if c.predict_output_bias:
      if base.bias is None:
        raise ValueError("config predicts an output bias but the base has none")
      bias_rows = jnp.take(base.bias, ids, axis=0).astype(jnp.float32)
      delta_bias = _dense(1, ("hn_embed", None), "bias_head", zeros, self.dtype)(pooled)[:, 0]
      pred_bias = _heuristic(bias_rows, mask_vl, c.heuristic) + jnp.where(
        predicted[:, 0], delta_bias.astype(jnp.float32), 0.0
      )

    if special_base_ids is not None:
      is_special = special_base_ids >= 0
      src = jnp.clip(special_base_ids, 0, base.input.shape[0] - 1)
      pred_in = jnp.where(is_special[:, None], jnp.take(base.input, src, axis=0).astype(jnp.float32), pred_in)
      if pred_out is not None:
        pred_out = jnp.where(is_special[:, None], jnp.take(base_out, src, axis=0).astype(jnp.float32), pred_out)
      if pred_bias is not None:
        assert base.bias is not None  # pred_bias is predicted from it
        pred_bias = jnp.where(is_special, jnp.take(base.bias, src).astype(jnp.float32), pred_bias)
    return Embeddings(pred_in, pred_out, pred_bias)

  def _rematerialised_layers(self, x_vlh, key_mask_vl):
    """The encoder layers as a scan over their stacked params, each layer recomputed in its backward pass.

    Not a loop of `nn.remat` layers: nothing orders the recomputations of such a loop, and XLA (on CPU at least)
    schedules them all at the start of the backward pass, so memory does not drop. A scan runs them one layer at a
    time. The params keep their `layer_{i}` names; stacking them copies only the (small) body weights.
    """
    per_layer = [nn.meta.unbox(self.variables["params"][f"layer_{i}"]) for i in range(self.config.num_layers)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    layer = _EncoderLayer(self.config, self.dtype, parent=None)  # unbound: applied to each layer's params in turn

    def body(x, params):
      return layer.apply({"params": params}, x, key_mask_vl), None

    # prevent_cse=False is safe inside scan (its loop keeps XLA from merging recomputation and forward pass).
    x_vlh, _ = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), x_vlh, stacked)
    return x_vlh


def init_hypernet(config: HypernetConfig, base: Embeddings, rng, dtype=jnp.float32):
  """Initial (unboxed) parameters; at this point predictions equal the heuristic."""
  module = Hypernet(config, dtype)
  ids = jnp.zeros((1, config.surface_length), jnp.int32)
  lengths = jnp.ones((1,), jnp.int32)
  variables = module.init(rng, ids, lengths, base)
  return nn.meta.unbox(variables["params"])


def abstract_params(config: HypernetConfig, base: Embeddings, dtype=jnp.float32):
  """Boxed abstract parameters (shapes + logical axis names), without allocating anything."""
  module = Hypernet(config, dtype)
  ids = jax.ShapeDtypeStruct((1, config.surface_length), jnp.int32)
  lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
  return jax.eval_shape(module.init, jax.random.key(0), ids, lengths, base)["params"]


def predict(
  config: HypernetConfig,
  params,
  surface_ids,
  surface_lengths,
  base: Embeddings,
  special_base_ids=None,
  dtype=jnp.float32,
  buckets=None,
  vocab_size=None,
) -> Embeddings:
  """Predicts embeddings for one chunk of target tokens (jit this or call `predict_jit`).

  A `PublishedHypernetConfig` runs the ZeTT authors' architecture instead (float32; `buckets` only saves work, so
  it is not needed there).
  """
  if isinstance(config, PublishedHypernetConfig):
    return published_model.predict(config, params, surface_ids, surface_lengths, base, special_base_ids)
  # Flax types `apply` as "output or (output, mutated variables)"; without `mutable` it is the output alone.
  return Hypernet(config, dtype).apply(  # pyright: ignore[reportReturnType]
    {"params": params}, surface_ids, surface_lengths, base, special_base_ids, buckets, vocab_size
  )


predict_jit = jax.jit(predict, static_argnames=("config", "dtype", "buckets"))
