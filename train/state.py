"""The trainable state (step, hypernetwork params, optimiser state, RNG) and the optimiser that updates it.

The frozen base weights are NOT here: they are a separate, non-differentiated argument of the step, so they never
enter the optimiser state or the training checkpoint (they reload from their own files).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding

from zett.train.config import OptimizerConfig

Optimizer = optax.GradientTransformation | optax.MultiSteps
"""What `make_optimizer` returns: `optax.MultiSteps` (gradient accumulation) is not a GradientTransformation but has
the same init and update."""


@struct.dataclass
class TrainState:
  """The state's arrays; the same tree also holds their shardings (`state_shardings`), so fields are typed Any."""

  step: Any
  """int32 scalar jax.Array: micro-steps taken (an optimiser update every `grad_accumulation_steps`)."""
  params: Any
  """Hypernetwork params (float32 master copy)."""
  opt_state: Any
  rng: Any
  """Raw uint32[2] key (a jax.Array); each step folds its step number in, so the stream does not depend on restarts."""


def learning_rate_schedule(config: OptimizerConfig, num_train_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay over the optimiser updates, or constant with an optional linear decay
  over the last `decay_steps` (warmup-stable-decay)."""
  warmup = min(config.warmup_steps, max(num_train_steps - 1, 0))
  if config.schedule == "constant":
    peak = config.learning_rate
    parts = [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)]
    boundaries = [warmup]
    if config.decay_steps:
      decay_start = max(num_train_steps - config.decay_steps, warmup)
      parts.append(
        optax.linear_schedule(peak, peak * config.end_learning_rate_ratio, max(num_train_steps - decay_start, 1))
      )
      boundaries.append(decay_start)
    return optax.join_schedules(parts, boundaries)
  return optax.warmup_cosine_decay_schedule(
    0.0,
    config.learning_rate,
    warmup,
    max(num_train_steps, warmup + 1),
    end_value=config.learning_rate * config.end_learning_rate_ratio,
  )


def _decay_mask(params):
  # Weight decay on matrices only; norms, biases and position tables are left alone (the usual AdamW practice).
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig, num_train_steps: int) -> Optimizer:
  """AdamW with warmup + cosine, global-norm clipping, and gradient accumulation via `optax.MultiSteps`."""
  parts = []
  if config.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(
    optax.adamw(
      learning_rate_schedule(config, num_train_steps),
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
      weight_decay=config.weight_decay,
      mask=_decay_mask,
    )
  )
  optimizer = optax.chain(*parts)
  if config.grad_accumulation_steps > 1:
    return optax.MultiSteps(optimizer, every_k_schedule=config.grad_accumulation_steps)
  return optimizer


def init_state(params, optimizer: Optimizer, seed: int) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.key_data(jax.random.key(seed)),
  )


def state_shardings(abstract_state: TrainState, optimizer, param_shardings, replicated: NamedSharding) -> TrainState:
  """Shardings of the whole state: optimiser moments follow their parameters; counters are replicated."""
  opt_shardings = optax.tree_map_params(
    optimizer,
    lambda _, sharding: sharding,
    abstract_state.opt_state,
    param_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=lambda x: isinstance(x, NamedSharding),
  )
  return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings, rng=replicated)


def create_sharded_state(init_params_fn, optimizer, seed: int, shardings_fn, *args) -> tuple[TrainState, TrainState]:
  """Builds the state straight into sharded arrays: abstract trace for shapes, then one jitted init.

  Args:
    init_params_fn: (*args) -> hypernetwork params (traced; nothing is allocated unsharded).
    shardings_fn: abstract TrainState -> TrainState of shardings.

  Returns:
    (state, shardings).
  """

  def build(*args):
    return init_state(init_params_fn(*args), optimizer, seed)

  abstract = jax.eval_shape(build, *args)
  shardings = shardings_fn(abstract)
  return jax.jit(build, out_shardings=shardings)(*args), shardings
