"""Greedy decoding with the functional KV cache (reference decoding for tests and the quickstart)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=0)
def _step(module, params, input_ids, attention_mask, cache):
  out = module.apply({"params": params}, input_ids=input_ids, attention_mask=attention_mask, cache=cache)
  return jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32), out.cache


def greedy_generate(
  model, input_ids, attention_mask=None, max_new_tokens: int = 20, eos_token_id: int | None = None
) -> np.ndarray:
  """Greedy continuation of a (left-padded) prompt batch; returns int32 [B, <= max_new_tokens].

  Stops early once every row has produced `eos_token_id`; rows that finished earlier repeat it.
  """
  input_ids = np.asarray(input_ids, np.int32)
  batch, prompt_length = input_ids.shape
  if attention_mask is None:
    attention_mask = np.ones_like(input_ids)
  cache = model.family.init_cache(model.config, batch, prompt_length + max_new_tokens, jnp.dtype(model.module.dtype))
  next_ids, cache = _step(model.module, model.params, input_ids, np.asarray(attention_mask, np.int32), cache)
  generated, finished = [], np.zeros(batch, bool)
  ones = np.ones((batch, 1), np.int32)
  for i in range(max_new_tokens):
    tokens = np.asarray(next_ids)
    if eos_token_id is not None:
      tokens = np.where(finished, eos_token_id, tokens)
      finished |= tokens == eos_token_id
    generated.append(tokens)
    if finished.all() or i == max_new_tokens - 1:
      break
    next_ids, cache = _step(model.module, model.params, tokens[:, None], ones, cache)
  return np.stack(generated, axis=1)
