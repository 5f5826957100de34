"""Running a frozen base model on dynamically merged batches.

* `DynamicEmbedder`: input embeddings for a merged batch. Base-vocabulary tokens use the base rows;
  new tokens get hypernetwork rows, through an LRU cache keyed by the token's bytes.
* `evaluate_decoder`: prefill each prompt with merged tokens, then continue in the base vocabulary
  through the KV cache; reports the prefill reduction and the bits per byte of the continuation
  after a base prefill vs after a merged prefill (the same bytes are scored in both).
* `evaluate_encoder`: run the model on the merged batch (positions re-numbered 0..T'-1) and report
  the sequence reduction and how close the mean-pooled final hidden states stay to the base run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zett.dynamic.batch import BaseBatch, MergeResult
from zett.dynamic.cache import EmbeddingCache
from zett.dynamic.merge import merge_batch
from zett.dynamic.split import split_texts
from zett.errors import ZettError
from zett.models.decoding import Decoder


class DynamicRunError(ZettError, ValueError):
  """Input the dynamic runner cannot use (no tokenizer, texts too short, ...)."""


class DynamicEmbedder:
  """Input-embedding rows for merged batches: base rows, or hypernetwork rows via the cache.

  Args:
    model: the frozen `BaseModel`.
    hypernet: anything `hypernet.load_hypernetwork` takes (checked against `model`), or None for a freshly
      initialised hypernetwork, which predicts the mean of the subtoken embeddings.
    cache_capacity: LRU size in tokens (the paper uses 5k-10k).
  """

  def __init__(self, model: Any, hypernet: Any = None, cache_capacity: int = 8192, seed: int = 0):
    from zett.hypernet.config import config_for_base
    from zett.hypernet.model import init_hypernet
    from zett.hypernet.record import load_hypernetwork

    self.model = model
    self.base = model.embeddings
    if hypernet is None:
      config = config_for_base(model)
      hypernet = (config, init_hypernet(config, self.base, jax.random.key(seed)))
    self.hypernetwork = load_hypernetwork(hypernet, model)
    self.base_input_vd = np.asarray(self.base.input, dtype=np.float32)
    self.cache = EmbeddingCache(cache_capacity)
    self.truncated_surface_forms = 0
    """New tokens longer than the hypernetwork's surface length; it saw their first subtokens only."""

  def _predict(self, surfaces: list[tuple[int, ...]]) -> np.ndarray:
    from zett.hypernet.vocabulary import embed_vocabulary
    from zett.tokenization.surface import pack_rows

    ids, lengths, truncated = pack_rows(surfaces, self.hypernetwork.config.surface_length)
    self.truncated_surface_forms += truncated
    return embed_vocabulary(self.hypernetwork, self.base, ids, lengths).input

  def new_token_rows(self, result: MergeResult) -> np.ndarray:
    """Rows [K, D] for `result.new_tokens`."""
    if not result.new_tokens:
      return np.zeros((0, self.base_input_vd.shape[1]), np.float32)
    surface_of = dict(zip(result.new_tokens, result.new_token_base_ids))
    return self.cache.lookup_or_compute(result.new_tokens, lambda keys: self._predict([surface_of[k] for k in keys]))

  def embed(self, result: MergeResult) -> list[np.ndarray]:
    """Per example, float32 [N_i, D] input embeddings of the merged tokens."""
    new_rows = self.new_token_rows(result)
    vocab_size = self.base_input_vd.shape[0]
    out = []
    for ids in result.ids:
      rows = np.empty((len(ids), self.base_input_vd.shape[1]), np.float32)
      is_base = ids < vocab_size
      rows[is_base] = self.base_input_vd[ids[is_base]]
      rows[~is_base] = new_rows[ids[~is_base] - vocab_size]
      out.append(rows)
    return out


@dataclasses.dataclass(frozen=True)
class DecoderReport:
  """Prefill with merged tokens vs with base tokens, scored on the same continuation bytes."""

  prompt_tokens_base: int
  prompt_tokens_merged: int
  continuation_tokens: int
  continuation_bytes: int
  bits_per_byte_base: float
  bits_per_byte_merged: float
  new_tokens: int
  merges: int
  stop_reason: str
  generated_base_prefill: list[list[int]]
  generated_merged_prefill: list[list[int]]

  @property
  def prefill_reduction(self) -> float:
    return 1.0 - self.prompt_tokens_merged / self.prompt_tokens_base


@dataclasses.dataclass(frozen=True)
class EncoderReport:
  tokens_base: int
  tokens_merged: int
  mean_pooled_cosine: float
  """Mean over examples of cos(mean-pooled final hidden states, base run vs merged run)."""
  new_tokens: int
  merges: int
  stop_reason: str

  @property
  def reduction(self) -> float:
    return 1.0 - self.tokens_merged / self.tokens_base


def _tokenizer(model: Any, tokenizer: Any):
  tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
  if tokenizer is None:
    raise DynamicRunError(f"model {getattr(model, 'name', '?')} has no tokenizer; pass one")
  return tokenizer


def _pad(rows: Sequence[np.ndarray], left: bool, multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Stacks [N_i, ...] arrays into [B, N, ...] with a 0/1 mask; left padding for prompts.

  N is rounded up to a multiple of `multiple` so that batches of similar lengths share one compile.
  """
  longest = -(-max(len(r) for r in rows) // multiple) * multiple
  out = np.zeros((len(rows), longest) + rows[0].shape[1:], rows[0].dtype)
  mask = np.zeros((len(rows), longest), np.int32)
  for b, r in enumerate(rows):
    where = slice(longest - len(r), longest) if left else slice(0, len(r))
    out[b, where] = r
    mask[b, where] = 1
  return out, mask


@functools.partial(jax.jit, static_argnames="module")
def _pooled(module, params, inputs_embeds, attention_mask):
  """Mean over the unmasked positions of the final hidden states [B, D]."""
  hidden = module.apply(
    {"params": params}, inputs_embeds=inputs_embeds, attention_mask=attention_mask, compute_logits=False
  ).hidden_states
  weights = attention_mask[..., None].astype(hidden.dtype)
  return (hidden * weights).sum(1) / weights.sum(1)


def _score_and_generate(
  model: Any, prompt_rows: list[np.ndarray], continuations: list[np.ndarray], generate_tokens: int
) -> tuple[float, list[list[int]]]:
  """Total bits of the continuations after the prompts, and greedy base tokens after the prompts."""
  decoder = Decoder(model, donate_cache=False)  # the prefilled cache serves the scoring and the generation
  embeds, prompt_mask = _pad(prompt_rows, left=True)
  cont_ids, cont_mask = _pad([c.astype(np.int32) for c in continuations], left=False)
  state = decoder.prefill(embeds=embeds, mask=prompt_mask, new_tokens=max(cont_ids.shape[1], generate_tokens))
  cont_logits, _ = decoder.forward(state.cache, ids=jnp.asarray(cont_ids), mask=jnp.asarray(cont_mask), reads="all")
  logits_btv = jnp.concatenate([state.last[:, None], cont_logits[:, :-1]], axis=1)
  log_probs = jax.nn.log_softmax(logits_btv, axis=-1)
  target = jnp.take_along_axis(log_probs, jnp.asarray(cont_ids)[..., None], axis=-1)[..., 0]
  bits = float(-(target * jnp.asarray(cont_mask)).sum() / math.log(2))
  if not generate_tokens:
    return bits, [[] for _ in continuations]
  return bits, np.stack(list(decoder.decode(state, generate_tokens)), axis=1).tolist()


def evaluate_decoder(
  model: Any,
  embedder: DynamicEmbedder,
  texts: Sequence[str],
  *,
  prompt_fraction: float = 0.5,
  max_length: int = 256,
  generate_tokens: int = 0,
  tokenizer: Any = None,
  **merge_rules,
) -> DecoderReport:
  """Merged prefill vs base prefill on `texts`, continuation scored in the base vocabulary.

  Each text is cut to `max_length` base tokens; the first `prompt_fraction` of them is the prompt
  (merged with `merge_rules`: max_merges / target_reduction / min_frequency; none = word level),
  the rest is the continuation whose bits per byte are reported. `max_token_length` defaults to the
  hypernetwork's surface length, so that it sees every new token whole.
  """
  merge_rules.setdefault("max_token_length", embedder.hypernetwork.config.surface_length)
  if not getattr(model.family, "is_causal", False) or model.family.init_cache is None:
    raise DynamicRunError(f"{model.name}: evaluate_decoder needs a decoder with a KV cache")
  if not 0.0 < prompt_fraction < 1.0:
    raise DynamicRunError(f"prompt_fraction must be in (0, 1), got {prompt_fraction}")
  batch = split_texts(_tokenizer(model, tokenizer), texts, max_length=max_length)
  prompts, continuations, starts = [], [], []
  for i, ids in enumerate(batch.token_ids):
    if len(ids) < 2:
      raise DynamicRunError(f"text {i} has {len(ids)} base tokens; need 2+ (a prompt and a continuation)")
    cut = min(len(ids) - 1, max(1, round(prompt_fraction * len(ids))))
    prompts.append(ids[:cut])
    continuations.append(ids[cut:])
    starts.append(batch.starts_pretoken[i][:cut])
  prompt_batch = BaseBatch(prompts, starts, batch.id_to_bytes, batch.special_ids)
  result = merge_batch(prompt_batch, **merge_rules)
  base_rows = [embedder.base_input_vd[ids] for ids in prompts]
  bits_base, generated_base = _score_and_generate(model, base_rows, continuations, generate_tokens)
  bits_merged, generated_merged = _score_and_generate(model, embedder.embed(result), continuations, generate_tokens)
  num_bytes = sum(len(batch.id_to_bytes[int(i)]) for c in continuations for i in c)
  return DecoderReport(
    prompt_tokens_base=sum(len(p) for p in prompts),
    prompt_tokens_merged=result.num_merged_tokens,
    continuation_tokens=sum(len(c) for c in continuations),
    continuation_bytes=num_bytes,
    bits_per_byte_base=bits_base / num_bytes,
    bits_per_byte_merged=bits_merged / num_bytes,
    new_tokens=len(result.new_tokens),
    merges=len(result.merges),
    stop_reason=result.stop_reason,
    generated_base_prefill=generated_base,
    generated_merged_prefill=generated_merged,
  )


def evaluate_encoder(
  model: Any,
  embedder: DynamicEmbedder,
  texts: Sequence[str],
  *,
  max_length: int = 256,
  tokenizer: Any = None,
  **merge_rules,
) -> EncoderReport:
  """Runs the model on the base and the merged batch; positions are re-numbered 0..N_i-1.

  `max_token_length` defaults to the hypernetwork's surface length (see `evaluate_decoder`).
  """
  merge_rules.setdefault("max_token_length", embedder.hypernetwork.config.surface_length)
  batch = split_texts(_tokenizer(model, tokenizer), texts, max_length=max_length)
  result = merge_batch(batch, **merge_rules)
  pooled = functools.partial(_pooled, model.module)
  base_embeds, base_mask = _pad([embedder.base_input_vd[np.asarray(ids)] for ids in batch.token_ids], left=False)
  merged_embeds, merged_mask = _pad(embedder.embed(result), left=False)
  base_pooled = np.asarray(pooled(model.params, jnp.asarray(base_embeds), jnp.asarray(base_mask)))
  merged_pooled = np.asarray(pooled(model.params, jnp.asarray(merged_embeds), jnp.asarray(merged_mask)))
  cosine = (base_pooled * merged_pooled).sum(-1) / (
    np.linalg.norm(base_pooled, axis=-1) * np.linalg.norm(merged_pooled, axis=-1) + 1e-12
  )
  return EncoderReport(
    tokens_base=result.num_base_tokens,
    tokens_merged=result.num_merged_tokens,
    mean_pooled_cosine=float(cosine.mean()),
    new_tokens=len(result.new_tokens),
    merges=len(result.merges),
    stop_reason=result.stop_reason,
  )
