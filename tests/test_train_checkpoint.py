"""The orbax checkpointer: exact on-disk round trip (sync and async), the step/time policy with a fake clock."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.train.checkpoint import CheckpointError, Checkpointer
from zett.train.config import CheckpointConfig


def _state(seed):
  from zett.train.state import TrainState
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


def _damage_truncated_array(step_dir):
  for path in (step_dir / "state").rglob("d/*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:10])


def _damage_metadata(step_dir):
  (step_dir / "state" / "_METADATA").write_text("{not json")


def _damage_manifest(step_dir):
  for path in (step_dir / "state").rglob("manifest.ocdbt"):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_damage_truncated_array, _damage_metadata, _damage_manifest],
                         ids=["truncated array file", "broken metadata", "empty manifest"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
  checkpointer = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  for step in (1, 2, 3):
    checkpointer.save(step, _state(step), {"position": step}, {"train": {"seed": 1}})
  checkpointer.close()
  damage(tmp_path / "ckpt" / "3")
  reopened = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: sharding, _state(0))
  said = []
  step, restored, data_state, _ = reopened.restore_newest_intact(_state(0), shardings, log=said.append)
  assert step == 2 and data_state == {"position": 2}
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(_state(2))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert "skipping damaged checkpoint" in said[0] and str(tmp_path / "ckpt" / "3") in said[0]
  # The damaged step is moved aside, so the resumed run can save step 3 again.
  assert reopened.all_steps_newest_first() == [2, 1]
  assert [p.name.split("-")[:2] for p in (tmp_path / "ckpt").glob("skipped-*")] == [["skipped", "3"]]
  reopened.save(3, _state(3), {"position": 3}, {"train": {"seed": 1}})
  reopened.wait()
  assert reopened.latest_step() == 3


def test_no_intact_checkpoint_is_one_clear_error_listing_each(tmp_path):
  checkpointer = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  for step in (1, 2):
    checkpointer.save(step, _state(step), {"position": step}, {"train": {}})
  checkpointer.close()
  _damage_manifest(tmp_path / "ckpt" / "2")
  _damage_truncated_array(tmp_path / "ckpt" / "1")
  reopened = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*ckpt: step 2 \(.*manifest.*\); step 1") as e:
    reopened.restore_newest_intact(_state(0), jax.tree.map(lambda _: sharding, _state(0)), log=lambda _: None)
  assert "\n" not in str(e.value)
  assert reopened.all_steps_newest_first() == [2, 1]  # nothing is moved when there is nothing to resume from


def test_a_checkpoint_with_a_damaged_config_is_skipped_too(tmp_path):
  checkpointer = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  for step in (1, 2):
    checkpointer.save(step, _state(step), {"position": step}, {"train": {"seed": step}})
  checkpointer.close()
  (tmp_path / "ckpt" / "2" / "config" / "metadata").write_text("{")
  reopened = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=5))
  said = []
  assert reopened.newest_readable_config(log=said.append) == (1, {"train": {"seed": 1}})
  assert "skipping checkpoint" in said[0] and str(tmp_path / "ckpt" / "2") in said[0]
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  step, *_ = reopened.restore_newest_intact(_state(0), jax.tree.map(lambda _: sharding, _state(0)), log=said.append)
  assert step == 1 and reopened.all_steps_newest_first() == [1]
