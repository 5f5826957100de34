"""Token-by-token decoding of the base model with a KV cache, for streaming (/v1/generate).

Prompts are left-padded to a power-of-two bucket and the cache is sized to a bucket of
prompt + new tokens, so a handful of compilations serve every request. Each `Decoding.step` is one
jitted call; the service runs it in a worker thread and streams the token as soon as it is back.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

_MIN_PROMPT_BUCKET = 16


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, n - 1).bit_length())


class Generator:
  """Greedy or sampled decoding of a causal base model (`zett.models.load.BaseModel`)."""

  def __init__(self, model):
    if not model.family.is_causal or model.family.init_cache is None:
      raise ValueError(f"{model.name}: family {model.family.name} cannot generate (not a decoder with a KV cache)")
    self.model = model
    module, config = model.module, model.config

    def prefill(params, ids_bt, mask_bt, cache, key, temperature):
      out = module.apply({"params": params}, input_ids=ids_bt, attention_mask=mask_bt, cache=cache)
      return _choose(out.logits[:, -1], key, temperature), out.cache

    def step(params, token_b, cache, key, temperature):
      out = module.apply({"params": params}, input_ids=token_b[:, None], attention_mask=jnp.ones_like(token_b)[:, None],
                         cache=cache)
      return _choose(out.logits[:, -1], key, temperature), out.cache

    self._prefill = jax.jit(prefill)
    self._step = jax.jit(step, donate_argnums=(2,))
    self._init_cache = functools.partial(model.family.init_cache, config)

  def decode(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             stop_ids: frozenset[int] = frozenset()) -> Iterator[int]:
    """Yields up to `max_new_tokens` token ids; stops after yielding one of `stop_ids`.

    Each `next()` runs one device call, so a consumer can stream and stop at any point.
    """
    if not prompt_ids:
      raise ValueError("the prompt has no tokens")
    n = len(prompt_ids)
    prompt_len = _bucket(n, _MIN_PROMPT_BUCKET)
    total = _bucket(prompt_len + max_new_tokens, 2 * _MIN_PROMPT_BUCKET)
    ids = np.zeros((1, prompt_len), np.int32)
    mask = np.zeros((1, prompt_len), np.int32)
    ids[0, prompt_len - n:] = prompt_ids
    mask[0, prompt_len - n:] = 1
    cache = self._init_cache(1, total)
    key = jax.random.key(seed)
    temperature = jnp.float32(temperature)
    params = self.model.params
    token, cache = self._prefill(params, jnp.asarray(ids), jnp.asarray(mask), cache, jax.random.fold_in(key, 0),
                                 temperature)
    for i in range(max_new_tokens):
      value = int(token[0])
      yield value
      if value in stop_ids or i + 1 == max_new_tokens:
        return
      token, cache = self._step(params, token, cache, jax.random.fold_in(key, i + 1), temperature)


def _choose(logits_bv, key, temperature):
  greedy = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
  sampled = jax.random.categorical(key, logits_bv / jnp.maximum(temperature, 1e-6), axis=-1).astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)
