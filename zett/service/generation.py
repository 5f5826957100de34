"""Token-by-token decoding of the base model with a KV cache, for streaming (/v1/generate).

Prompts are left-padded to a multiple of `PREFILL_CHUNK` and fed in chunks of that size; the cache
is sized to a power-of-four bucket of prompt + new tokens. So each cache bucket compiles two programs
(one prefill chunk, one step), whatever the prompt length. Each `Decoding.step` is one
jitted call; the service runs it in a worker thread and streams the token as soon as it is back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

PREFILL_CHUNK = 64
_MIN_CACHE_SLOTS = 256


def _cache_slots(n: int) -> int:
  slots = _MIN_CACHE_SLOTS
  while slots < n:
    slots *= 4
  return slots


class Generator:
  """Greedy or sampled decoding of a causal base model (`zett.models.base.BaseModel`)."""

  def __init__(self, model):
    if not model.family.is_causal or model.family.init_cache is None:
      raise ValueError(f"{model.name}: family {model.family.name} cannot generate (not a decoder with a KV cache)")
    self.model = model
    module, config = model.module, model.config

    def prefill(params, ids_bt, mask_bt, cache, key, temperature):
      out = module.apply({"params": params}, input_ids=ids_bt, attention_mask=mask_bt, cache=cache)
      return _choose(out.logits[:, -1], key, temperature), out.cache

    def step(params, token_b, cache, key, temperature):
      out = module.apply(
        {"params": params}, input_ids=token_b[:, None], attention_mask=jnp.ones_like(token_b)[:, None], cache=cache
      )
      return _choose(out.logits[:, -1], key, temperature), out.cache

    self._prefill = jax.jit(prefill, donate_argnums=(3,))
    self._step = jax.jit(step, donate_argnums=(2,))
    self._init_cache = functools.partial(model.family.init_cache, config)

  def decode(
    self,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    stop_ids: frozenset[int] = frozenset(),
  ) -> Iterator[int]:
    """Yields up to `max_new_tokens` token ids; stops after yielding one of `stop_ids`.

    Each `next()` runs one device call, so a consumer can stream and stop at any point.
    """
    if not prompt_ids:
      raise ValueError("the prompt has no tokens")
    n = len(prompt_ids)
    prompt_len = -(-n // PREFILL_CHUNK) * PREFILL_CHUNK
    ids = np.zeros((1, prompt_len), np.int32)
    mask = np.zeros((1, prompt_len), np.int32)
    ids[0, prompt_len - n :] = prompt_ids
    mask[0, prompt_len - n :] = 1
    cache = self._init_cache(1, _cache_slots(prompt_len + max_new_tokens))
    key = jax.random.key(seed)
    temperature = jnp.float32(temperature)
    params = self.model.params
    for start in range(0, prompt_len, PREFILL_CHUNK):
      chunk = slice(start, start + PREFILL_CHUNK)
      token, cache = self._prefill(
        params, jnp.asarray(ids[:, chunk]), jnp.asarray(mask[:, chunk]), cache, jax.random.fold_in(key, 0), temperature
      )
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


class LargeVocabularyDecoder:
  """Generation with a large vocabulary built by `zett.ann.build` (next tokens through the ANN index).

  The prompt is tokenized with the large vocabulary itself, as `zett.ann.generate` does.
  """

  def __init__(self, model, vocab_dir):
    from zett.ann.generate import LargeVocabGenerator

    self.generator = LargeVocabGenerator(model, vocab_dir)
    self.tokenizer = self.generator.tokenizer

  def steps(
    self, prompt: str, max_new_tokens: int, temperature: float = 0.0, seed: int = 0, stop_at_eos: bool = True
  ) -> Iterator[tuple[int, bytes]]:
    """Yields (large-vocabulary id, token bytes) per generated token."""
    prompt_ids = self.tokenizer.encode(prompt)
    bos = self.tokenizer.roles.get("bos")
    if self.tokenizer.add_bos and bos is not None:
      prompt_ids = [bos] + prompt_ids
    for token, _ in self.generator.generate_ids(
      prompt_ids, max_new_tokens, temperature=temperature, seed=seed, stop_at_eos=stop_at_eos
    ):
      yield token, self.tokenizer.vocab_bytes[token]
