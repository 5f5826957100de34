"""The orbax checkpointer: exact on-disk round trip (sync and async), the step/time policy with a fake clock."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.checkpoint import CheckpointError, Checkpointer
from train.config import CheckpointConfig


def _state(seed):
  from train.state import TrainState
  keys = jax.random.split(jax.random.key(seed), 3)
  params = {"w": jax.random.normal(keys[0], (8, 4)), "b": jax.random.normal(keys[1], (4,))}
  return TrainState(step=jnp.asarray(7, jnp.int32), params=params,
                    opt_state={"mu": jax.tree.map(jnp.zeros_like, params)},
                    rng=jax.random.key_data(keys[2]))


@pytest.mark.parametrize("async_save", [False, True])
def test_round_trip_is_exact(tmp_path, async_save):
  state = _state(0)
  checkpointer = Checkpointer(tmp_path / "ckpt", CheckpointConfig(async_save=async_save))
  checkpointer.save(10, state, {"data": {"step": 3}, "sampler": {"window": ["a"]}}, {"train": {"seed": 1}})
  checkpointer.close()
  reopened = Checkpointer(tmp_path / "ckpt", CheckpointConfig())
  assert reopened.latest_step() == 10
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  restored, data_state, config = reopened.restore(_state(1), jax.tree.map(lambda _: sharding, state))
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert data_state == {"data": {"step": 3}, "sampler": {"window": ["a"]}} and config == {"train": {"seed": 1}}
  with pytest.raises(CheckpointError, match="no checkpoint"):
    Checkpointer(tmp_path / "empty", CheckpointConfig()).restore(state, None)


def test_policy_counts_updates_and_minutes():
  now = [0.0]
  checkpointer_config = CheckpointConfig(save_every_steps=10, save_every_minutes=5)
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    checkpointer = Checkpointer(tmp, checkpointer_config, micro_steps_per_update=2, clock=lambda: now[0])
    assert checkpointer.should_save(20) and not checkpointer.should_save(19) and not checkpointer.should_save(22)
    now[0] = 301.0
    assert checkpointer.should_save(22) and not checkpointer.should_save(23)  # time, but only on update boundaries
    checkpointer.save(22, _state(0), {}, {})
    assert not checkpointer.should_save(24)  # the clock restarted at the save
    checkpointer.close()
