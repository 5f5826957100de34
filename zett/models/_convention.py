"""What every family's `__call__` does the same way under the calling convention of `zett.models.family`.

Before the layers: the token embedding table and the input (ids looked up in it, or the caller's embeddings) in the
compute dtype, the attention mask, and for decoders the positions and cache slots of this call. After them: the LM
head (tied, untied, or the caller's output embeddings and bias) and the advanced KV cache. Also the families'
vocabulary-sized params as `Embeddings`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zett.models._attention import KVCache, attention_bias
from zett.models._layers import param
from zett.models.family import Embeddings, Params


class EmbeddedInputs(NamedTuple):
  embedding_vd: jax.Array
  """The module's input embedding table `embed_tokens` (also the LM head when tied)."""
  hidden_btd: jax.Array
  """The input embeddings in the compute dtype."""
  attention_mask_bt: jax.Array
  """int32, 1 = real token; all ones when the caller gave none."""


def embed_inputs(module: nn.Module, config: Any, dtype, input_ids, inputs_embeds, attention_mask) -> EmbeddedInputs:
  """Declares `embed_tokens` [vocab_size, hidden_size] on `module` and embeds exactly one of `input_ids` (looked up
  in it) and `inputs_embeds` (the hypernetwork path)."""
  if (input_ids is None) == (inputs_embeds is None):
    raise ValueError("pass exactly one of input_ids and inputs_embeds")
  embedding_vd = param(module, "embed_tokens", ("vocab", "embed"), (config.vocab_size, config.hidden_size))
  if inputs_embeds is None:
    assert input_ids is not None  # exactly one of the two (checked above)
    hidden_btd = jnp.take(embedding_vd, input_ids, axis=0).astype(dtype)
  else:
    hidden_btd = jnp.asarray(inputs_embeds).astype(dtype)
  if attention_mask is None:
    attention_mask = jnp.ones(hidden_btd.shape[:2], jnp.int32)
  return EmbeddedInputs(embedding_vd, hidden_btd, jnp.asarray(attention_mask).astype(jnp.int32))


def positions_from_mask(mask_bt):
  """Position ids counting real tokens only (left padding shifts them); padding slots get 0."""
  mask_bt = mask_bt.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask_bt, axis=-1) - 1, 0)


class DecoderSlots(NamedTuple):
  """Where a decoder call's T tokens sit among its S key slots (S = T without a cache, the cache's slots with one)."""

  key_mask_bs: jax.Array
  """int32, 1 where a key slot holds a real token."""
  cache_index: Any
  """Slot of the first query: 0 without a cache, the cache's fill index with one."""
  position_ids_bt: jax.Array
  bias_b1ts: jax.Array
  """Additive causal attention bias (`attention_bias`)."""


def decoder_slots(attention_mask_bt, position_ids, cache: KVCache | None, sliding_window: int | None = None):
  """The `DecoderSlots` of a call; `position_ids` default to counting the real tokens of the whole mask (the
  cached slots' included), so left padding does not shift them."""
  batch, length = attention_mask_bt.shape
  if cache is None:
    key_mask_bs, cache_index = attention_mask_bt, 0
    if position_ids is None:
      position_ids = positions_from_mask(attention_mask_bt)
  else:
    cache_index = cache.index
    key_mask_bs = jax.lax.dynamic_update_slice(cache.mask, attention_mask_bt, (0, cache_index))
    if position_ids is None:
      position_ids = jax.lax.dynamic_slice(positions_from_mask(key_mask_bs), (0, cache_index), (batch, length))
  bias_b1ts = attention_bias(key_mask_bs, cache_index, length, sliding_window)
  return DecoderSlots(key_mask_bs, cache_index, position_ids, bias_b1ts)


def layer_caches(cache: KVCache | None):
  """The (key, value) stacks a scanned decoder layer slices per layer, or None without a cache."""
  return None if cache is None else (cache.key, cache.value)


def advanced_cache(cache: KVCache | None, written_layer_caches, slots: DecoderSlots) -> KVCache | None:
  """The cache after a call: the layers' written (key, value) stacks, the call's mask, the fill index moved on."""
  if cache is None:
    return None
  assert written_layer_caches is not None  # the layers return the caches they were given
  key, value = written_layer_caches
  return KVCache(key, value, slots.key_mask_bs, cache.index + slots.position_ids_bt.shape[1])


def vocabulary_logits(hidden_btd, lm_head_vd, bias_v, dtype):
  """float32 logits [B, T, V] = hidden @ lm_head.T (+ bias), with the matmul in `dtype`."""
  logits = jnp.einsum(
    "btd,vd->btv", hidden_btd, jnp.asarray(lm_head_vd).astype(dtype), preferred_element_type=jnp.float32
  )
  if bias_v is not None:
    logits = logits + jnp.asarray(bias_v).astype(jnp.float32)
  return logits


def lm_head_logits(
  module: nn.Module,
  config: Any,
  inputs: EmbeddedInputs,
  hidden_btd,
  dtype,
  output_embeddings,
  output_bias,
  compute_logits: bool,
  stored_bias_v=None,
):
  """The logits (None unless `compute_logits`) of the LM head: `embed_tokens` when tied, else `lm_head`
  [vocab_size, hidden_size] (declared on `module` either way), plus `stored_bias_v` (BERT's).

  `output_embeddings` replace the head; a replaced vocabulary has no use for the stored bias, so then the bias is
  `output_bias` or none. `output_bias` alone replaces the stored bias.
  """
  if config.tie_word_embeddings:
    lm_head_vd = inputs.embedding_vd
  else:
    lm_head_vd = param(module, "lm_head", ("vocab", "embed"), (config.vocab_size, config.hidden_size))
  if not compute_logits:
    return None
  bias_v = stored_bias_v if output_bias is None else output_bias
  if output_embeddings is not None:
    lm_head_vd, bias_v = output_embeddings, output_bias
  return vocabulary_logits(hidden_btd, lm_head_vd, bias_v, dtype)


def get_embeddings(config: Any, params: Params, bias_v=None) -> Embeddings:
  """The vocabulary-sized params: `embed_tokens`, `lm_head` unless tied, and the LM-head bias if the family has one."""
  return Embeddings(params["embed_tokens"], None if config.tie_word_embeddings else params["lm_head"], bias_v)


def with_embeddings(params: Params, embeddings: Embeddings) -> Params:
  """`params` with `embed_tokens` and `lm_head` from `embeddings` (no `lm_head` when `embeddings.output` is None:
  tied); the bias is the family's to place."""
  params = dict(params, embed_tokens=embeddings.input)
  params.pop("lm_head", None)
  if embeddings.output is not None:
    if tuple(embeddings.output.shape) != tuple(embeddings.input.shape):
      raise ValueError(
        f"output embeddings {tuple(embeddings.output.shape)} differ in shape from input embeddings "
        f"{tuple(embeddings.input.shape)}"
      )
    params["lm_head"] = embeddings.output
  return params
