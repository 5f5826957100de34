"""The loss and the pure, jitted training step.

`train_step(state, batch, base_params) -> (state, metrics)`. A batch (see `train.batch.BATCH_KEYS`) holds text encoded
with this step's sampled tokenizer as indices into a static-size *batch vocabulary* (the sampled tokens that occur in
the batch plus negatives), and that vocabulary's base-subtoken spellings. The hypernetwork predicts input and output
embeddings (and the output bias, for encoders that have one) for those rows; the frozen base runs on them.

Loss = base LM loss (next-token for decoders, masked-LM for encoders; no loss on padding or on masked-out vocabulary
rows) + `aux_loss_weight` x mean squared distance of the predicted rows of tokens that exist in the base vocabulary
to their original embeddings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from zett.hypernet.config import HypernetConfig
from zett.hypernet.model import Hypernet
from zett.models.family import Embeddings
from zett.train.state import Optimizer, TrainState

_MASKED_LOGIT = -1e9


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """Static (hashable) description of the loss: everything the step needs besides arrays."""

  hypernet_config: HypernetConfig
  base_family: Any
  base_config: Any
  base_module: Any
  causal: bool
  aux_loss_weight: float = 0.5
  mlm_probability: float = 0.15
  compute_dtype: Any = jnp.float32
  remat: bool = False
  """Recompute the hypernetwork's layers in the backward pass (the base's own switch is `base_module.remat`)."""
  encoder_buckets: tuple[tuple[int, int], ...] | None = None
  """Packed encoder buckets of training batches (`Hypernet` `buckets`); None = the padded path."""

  def hypernet(self) -> Hypernet:
    return Hypernet(self.hypernet_config, self.compute_dtype, self.remat)


def predict_embeddings(spec: LossSpec, params, batch, base_params) -> tuple[Embeddings, Embeddings]:
  """(predicted embeddings of the batch vocabulary, the frozen base embeddings)."""
  base = spec.base_family.get_embeddings(spec.base_config, base_params)
  # Flax types `apply` as "output or (output, mutated variables)"; without `mutable` it is the output alone.
  predicted: Embeddings = spec.hypernet().apply(  # pyright: ignore[reportAssignmentType]
    {"params": params},
    batch["surface_ids"],
    batch["surface_lengths"],
    base,
    batch["special_base_ids"],
    spec.encoder_buckets,
    batch["vocab_size"],
  )
  return predicted, base


def _mlm_corrupt(spec: LossSpec, batch, rng):
  """BERT masking: pick `mlm_probability` of real, non-special tokens; 80% [MASK], 10% random, 10% unchanged."""
  ids_bt = batch["token_ids"]
  is_special_bt = jnp.take(batch["special_base_ids"], ids_bt) >= 0
  candidates_bt = (batch["attention_mask"] > 0) & ~is_special_bt
  pick_rng, kind_rng, random_rng = jax.random.split(rng, 3)
  picked_bt = candidates_bt & (jax.random.uniform(pick_rng, ids_bt.shape) < spec.mlm_probability)
  kind_bt = jax.random.uniform(kind_rng, ids_bt.shape)
  # Random replacements come from real, non-special rows of the batch vocabulary.
  replaceable_v = batch["vocab_mask"] & (batch["special_base_ids"] < 0)
  random_ids_bt = jax.random.categorical(random_rng, jnp.where(replaceable_v, 0.0, -jnp.inf), shape=ids_bt.shape)
  corrupted_bt = jnp.where(kind_bt < 0.8, batch["mask_token_index"], jnp.where(kind_bt < 0.9, random_ids_bt, ids_bt))
  inputs_bt = jnp.where(picked_bt, corrupted_bt, ids_bt)
  return inputs_bt, picked_bt


def loss_and_metrics(spec: LossSpec, params, batch, base_params, rng):
  """Total loss (scalar) and metric sums; the nll / byte sums give bits per byte over the predicted tokens."""
  predicted, base = predict_embeddings(spec, params, batch, base_params)
  return loss_from_embeddings(spec, predicted, base, batch, base_params, rng)


def loss_from_embeddings(spec: LossSpec, predicted: Embeddings, base: Embeddings, batch, base_params, rng):
  """The loss given the batch vocabulary's predicted embeddings (rows aligned with the batch's vocabulary arrays)."""
  ids_bt = batch["token_ids"]
  mask_bt = batch["attention_mask"] > 0
  if spec.causal:
    inputs_bt = ids_bt
  else:
    inputs_bt, picked_bt = _mlm_corrupt(spec, batch, rng)
  inputs_embeds_btd = jnp.take(predicted.input, inputs_bt, axis=0).astype(spec.compute_dtype)
  output_vd = predicted.output if predicted.output is not None else predicted.input
  out = spec.base_module.apply(
    {"params": base_params},
    inputs_embeds=inputs_embeds_btd,
    attention_mask=mask_bt,
    output_embeddings=output_vd.astype(spec.compute_dtype),
    output_bias=predicted.bias,
  )
  # logit_offsets: the sampled-softmax correction of negative rows (0 in evaluation and when it is off).
  logits_btv = jnp.where(batch["vocab_mask"], out.logits.astype(jnp.float32) + batch["logit_offsets"], _MASKED_LOGIT)
  if spec.causal:
    logits_btv, targets_bt = logits_btv[:, :-1], ids_bt[:, 1:]
    weights_bt = (mask_bt[:, 1:] & mask_bt[:, :-1]).astype(jnp.float32)
  else:
    targets_bt, weights_bt = ids_bt, picked_bt.astype(jnp.float32)
  nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, targets_bt)
  num_targets = weights_bt.sum()
  nll_sum = (nll_bt * weights_bt).sum()
  lm_loss = nll_sum / jnp.maximum(num_targets, 1.0)
  target_bytes = (jnp.take(batch["token_bytes"], targets_bt) * weights_bt).sum()

  # Aux loss: tokens that also exist in the base vocabulary should keep (near) their original embeddings.
  in_base_v = (batch["base_ids"] >= 0) & batch["vocab_mask"] & (batch["special_base_ids"] < 0)
  base_rows = jnp.clip(batch["base_ids"], 0, base.input.shape[0] - 1)

  def row_distance(pred_vd, table_vd):
    return jnp.square(pred_vd - jnp.take(table_vd, base_rows, axis=0).astype(jnp.float32)).mean(-1)

  distance_v = row_distance(predicted.input, base.input)
  if predicted.output is not None:
    distance_v = 0.5 * (distance_v + row_distance(predicted.output, base.output))
  in_base_count = in_base_v.sum()
  aux_loss = jnp.where(in_base_v, distance_v, 0.0).sum() / jnp.maximum(in_base_count, 1)

  loss = lm_loss + spec.aux_loss_weight * aux_loss
  metrics = {
    "loss": loss,
    "lm_loss": lm_loss,
    "aux_loss": aux_loss,
    "nll_sum": nll_sum,
    "num_targets": num_targets,
    "target_bytes": target_bytes,
    "in_base_tokens": in_base_count.astype(jnp.float32),
  }
  return loss, metrics


def train_step(spec: LossSpec, optimizer: Optimizer, state: TrainState, batch, base_params):
  """One micro-step: gradients of the loss w.r.t. the hypernetwork only, then the optimiser update."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  grad_fn = jax.value_and_grad(lambda p: loss_and_metrics(spec, p, batch, base_params, rng), has_aux=True)
  (_, metrics), grads = grad_fn(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads))
  # What flax's `TrainState.replace` does, spelled so that type checkers know it.
  return dataclasses.replace(state, step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_sums(spec: LossSpec, predicted: Embeddings, batch, base_params):
  """(nll_sum, target_bytes, num_targets) of one evaluation batch (fixed rng so MLM masks repeat)."""
  base = spec.base_family.get_embeddings(spec.base_config, base_params)
  _, metrics = loss_from_embeddings(spec, predicted, base, batch, base_params, jax.random.key(0))
  return metrics["nll_sum"], metrics["target_bytes"], metrics["num_targets"]


def jit_train_step(spec: LossSpec, optimizer, state_shardings, batch_shardings, base_shardings, replicated):
  """`train_step` jitted once with explicit shardings; the state is donated (updated in place)."""

  def step(state, batch, base_params):
    return train_step(spec, optimizer, state, batch, base_params)

  return jax.jit(
    step,
    in_shardings=(state_shardings, batch_shardings, base_shardings),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,),
  )


def jit_eval_sums(spec: LossSpec, replicated):
  """`eval_sums` jitted: the LM sums of one evaluation batch given the predicted rows of its whole vocabulary.

  Evaluation embeds a whole tokenizer once per evaluation (`hypernet.embed_vocabulary`, chunk by chunk on the
  device), so memory stays bounded for large vocabularies and the prediction is not repeated for every batch of
  held-out text.
  """
  return jax.jit(
    lambda predicted, batch, base_params: eval_sums(spec, predicted, batch, base_params), out_shardings=replicated
  )


def bits_per_byte(nll_sum_nats: float, num_bytes: float) -> float:
  return float(nll_sum_nats) / math.log(2) / max(float(num_bytes), 1.0)
