"""One decoder for every generation path: prefill a KV cache, then one jitted call per new token.

What differs between the callers is pluggable:
- the prompt enters as base ids or as input embeddings (rows of a transferred, dynamic or large vocabulary);
- the chooser reads the last position's logits over the base vocabulary (`Greedy`, `Sampling`) or its final hidden
  state (`reads = "hidden"`: an ANN index picks from a larger vocabulary, `zett.ann.generate`);
- a chosen token enters the next step as its base id, or as its embedding row (`embed`).

Shapes are bucketed so that a long-lived decoder compiles few programs: prompts are left-padded to a multiple of
`PREFILL_CHUNK` and prefilled in chunks of that size, and the cache holds a power-of-two number of slots (at least
`MIN_CACHE_SLOTS`). Padding is masked out, so the bucketing does not change results. Callers: `greedy_generate`
(tests and the quickstart), the HTTP service's streaming, large-vocabulary generation (`zett.ann.generate`) and the
dynamic-tokenization evaluation (`zett.dynamic.run`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from zett.errors import ZettError
from zett.models._convention import vocabulary_logits

PREFILL_CHUNK = 64
MIN_CACHE_SLOTS = 128

Reads = Literal["logits", "hidden"]


class DecodingError(ZettError, ValueError):
  """A model that cannot decode (not a causal model with a KV cache), or a prompt with nothing in it."""


class Chooser(Protocol):
  """Picks the next token of every row from the last position's output ([B, V] logits or [B, D] hidden)."""

  @property
  def reads(self) -> Reads:
    """What the chooser reads: "logits" over the base vocabulary, or the final "hidden" state."""
    ...

  def __call__(self, last: jax.Array, step: int) -> np.ndarray | jax.Array:
    """int32 [B] token ids; `step` counts chosen tokens (0 for the one the prefill gives)."""
    ...


@dataclasses.dataclass(frozen=True)
class Greedy:
  """The most likely next token."""

  reads: Reads = "logits"

  def __call__(self, last: jax.Array, step: int) -> jax.Array:
    return _argmax(last)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """A token drawn from softmax(logits / temperature); greedy at temperature 0. The draw of step i uses
  fold_in(key(seed), i), so a run is reproducible from its seed."""

  temperature: float
  seed: int = 0
  reads: Reads = "logits"

  def __call__(self, last: jax.Array, step: int) -> jax.Array:
    if self.temperature <= 0:
      return _argmax(last)
    return _sample(last, jax.random.fold_in(jax.random.key(self.seed), step), jnp.float32(self.temperature))


GREEDY = Greedy()


@jax.jit
def _argmax(logits_bv):
  return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)


@jax.jit
def _sample(logits_bv, key, temperature):
  return jax.random.categorical(key, logits_bv / temperature, axis=-1).astype(jnp.int32)


@dataclasses.dataclass
class DecodeTiming:
  """Where decoding time went: the model's forward calls and the choosers (index search, sampling)."""

  model_seconds: float = 0.0
  choose_seconds: float = 0.0


@dataclasses.dataclass
class DecoderState:
  """A prefilled cache and the last position's output (what the first new token is chosen from)."""

  cache: Any
  last: jax.Array
  capacity: int
  """Positions the cache can still take."""


def cache_slots(length: int) -> int:
  """Cache size for `length` positions: a power of two, at least `MIN_CACHE_SLOTS`."""
  slots = MIN_CACHE_SLOTS
  while slots < length:
    slots *= 2
  return slots


def _left_pad_to_chunks(array: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  batch, length = mask.shape
  padded = -(-length // PREFILL_CHUNK) * PREFILL_CHUNK
  if padded == length:
    return array, mask
  pad = padded - length
  array = np.concatenate([np.zeros((batch, pad) + array.shape[2:], array.dtype), array], axis=1)
  return array, np.concatenate([np.zeros((batch, pad), mask.dtype), mask], axis=1)


def _forward(module, params, head_vd, bias_v, ids_bt, embeds_btd, mask_bt, cache, reads):
  out = module.apply(
    {"params": params},
    input_ids=ids_bt,
    inputs_embeds=embeds_btd,
    attention_mask=mask_bt,
    cache=cache,
    compute_logits=reads == "all",
  )
  if reads == "all":
    return out.logits, out.cache
  last_b1d = out.hidden_states[:, -1:]
  if reads == "hidden":
    return last_b1d[:, 0].astype(jnp.float32), out.cache
  return vocabulary_logits(last_b1d, head_vd, bias_v, module.dtype)[:, 0], out.cache


# Module-level, so that every decoder of one module shares the compiled programs (the module is hashable).
_forward_donating = jax.jit(_forward, static_argnames=("module", "reads"), donate_argnames=("cache",))
_forward_keeping = jax.jit(_forward, static_argnames=("module", "reads"))


class Decoder:
  """Prefill and step calls of one causal base model (`zett.models.base.BaseModel`), compiled once per shape.

  Args:
    model: the base model.
    donate_cache: let each call reuse the cache it is given (the old one is invalid afterwards). Off for callers
      that continue one prefilled cache twice (the dynamic evaluation scores a continuation and generates from it).
  """

  def __init__(self, model, donate_cache: bool = True):
    if not getattr(model.family, "is_causal", False) or model.family.init_cache is None:
      raise DecodingError(f"{model.name}: family {model.family.name} cannot generate (not a decoder with a KV cache)")
    self.model = model
    self._forward = _forward_donating if donate_cache else _forward_keeping

  def forward(
    self, cache, *, ids=None, embeds=None, mask=None, reads: Literal["logits", "hidden", "all"] = "logits"
  ) -> tuple[jax.Array, Any]:
    """One call over new positions: float32 [B, V] logits or [B, D] hidden state of the last one, or with
    `reads="all"` [B, T, V] logits of every position (scoring a continuation). Returns the output and the cache."""
    embeddings = self.model.embeddings
    head_vd = embeddings.output if embeddings.output is not None else embeddings.input
    params = self.model.params
    return self._forward(self.model.module, params, head_vd, embeddings.bias, ids, embeds, mask, cache, reads=reads)

  def prefill(self, *, ids=None, embeds=None, mask=None, new_tokens: int, reads: Reads = "logits") -> DecoderState:
    """Runs a (left-padded) prompt batch, ids [B, T] or embeddings [B, T, D] with a 0/1 mask [B, T], through a
    fresh cache with room for `new_tokens` more positions."""
    prompt = np.asarray(ids if embeds is None else embeds)
    if prompt.ndim < 2 or prompt.shape[1] == 0:
      raise DecodingError("the prompt has no tokens")
    if ids is not None:
      prompt = prompt.astype(np.int32)
    mask = np.ones(prompt.shape[:2], np.int32) if mask is None else np.asarray(mask, np.int32)
    if not mask.any(axis=1).all():
      raise DecodingError("a prompt row has no tokens")
    prompt, mask = _left_pad_to_chunks(prompt, mask)
    batch, length = mask.shape
    slots = cache_slots(length + new_tokens)
    cache = self.model.family.init_cache(self.model.config, batch, slots, jnp.float32)
    last = None
    for start in range(0, length, PREFILL_CHUNK):
      chunk = slice(start, start + PREFILL_CHUNK)
      inputs = {"ids" if embeds is None else "embeds": jnp.asarray(prompt[:, chunk])}
      last, cache = self.forward(cache, **inputs, mask=jnp.asarray(mask[:, chunk]), reads=reads)
    assert last is not None
    return DecoderState(cache, last, slots - length)

  def decode(
    self,
    state: DecoderState,
    max_new_tokens: int,
    choose: Chooser = GREEDY,
    *,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    stop_ids: frozenset[int] = frozenset(),
    timing: DecodeTiming | None = None,
  ) -> Iterator[np.ndarray]:
    """Yields int32 [B] next tokens, up to `max_new_tokens` times, each step one device call.

    A row that produced one of `stop_ids` repeats it; decoding ends once every row has. `embed` maps chosen ids
    [B, 1] to input rows [B, 1, D] for models fed embeddings (default: the ids are base ids). `choose.reads` must
    match what the state was prefilled with.
    """
    if max_new_tokens > state.capacity:
      raise DecodingError(f"{max_new_tokens} new tokens do not fit the cache ({state.capacity} positions left)")
    last, cache = state.last, state.cache
    batch = last.shape[0]
    finished, stopped_with = np.zeros(batch, bool), np.zeros(batch, np.int32)
    ones = jnp.ones((batch, 1), jnp.int32)
    for step in range(max_new_tokens):
      started = time.perf_counter()
      tokens = np.asarray(choose(last, step), np.int32)
      if timing is not None:
        timing.choose_seconds += time.perf_counter() - started
      tokens = np.where(finished, stopped_with, tokens)
      if stop_ids:
        newly = ~finished & np.isin(tokens, list(stop_ids))
        stopped_with = np.where(newly, tokens, stopped_with)
        finished |= newly
      yield tokens
      if finished.all() or step + 1 == max_new_tokens:
        return
      started = time.perf_counter()
      if embed is None:
        last, cache = self.forward(cache, ids=jnp.asarray(tokens[:, None]), mask=ones, reads=choose.reads)
      else:
        last, cache = self.forward(cache, embeds=jnp.asarray(embed(tokens[:, None])), mask=ones, reads=choose.reads)
      if timing is not None:
        last = jax.block_until_ready(last)
        timing.model_seconds += time.perf_counter() - started


def greedy_generate(
  model, input_ids, attention_mask=None, max_new_tokens: int = 20, eos_token_id: int | None = None
) -> np.ndarray:
  """Greedy continuation of a (left-padded) prompt batch; returns int32 [B, <= max_new_tokens].

  Stops early once every row has produced `eos_token_id`; rows that finished earlier repeat it.
  """
  decoder = Decoder(model)
  state = decoder.prefill(ids=input_ids, mask=attention_mask, new_tokens=max_new_tokens)
  stop = frozenset() if eos_token_id is None else frozenset({eos_token_id})
  return np.stack(list(decoder.decode(state, max_new_tokens, stop_ids=stop)), axis=1)
