"""`zett train` after things went wrong: a moved run folder, a damaged latest checkpoint, a diverged loss, a --resume
with nothing to resume (issue 15, items 3, 4 and 8)."""

import dataclasses
import json
import shutil
import subprocess

import jax.numpy as jnp
import pytest

from tests._train_helpers import REPO, TINY_CONFIG, subprocess_env, zett_train_command
from tests.test_train_checkpoint import _damage_manifest

pytestmark = pytest.mark.slow

_QUIET = ["eval.every_steps=0", "logging.progress_bar=false", "logging.tensorboard=false", "logging.every_steps=1"]


def _train(*args, timeout=600):
  return subprocess.run(zett_train_command(*_QUIET, *args), env=subprocess_env(), cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


def _summary(stdout):
  return json.loads(stdout[stdout.index("{\n"):])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A 4-step run with a checkpoint after every step."""
  run_dir = tmp_path_factory.mktemp("runs") / "original"
  done = _train(f"run_dir={run_dir}", "num_train_steps=4", "checkpoint.save_every_steps=1", "checkpoint.max_to_keep=5")
  assert done.returncode == 0, done.stderr[-3000:]
  return run_dir


def test_a_moved_run_folder_resumes(finished_run, tmp_path):
  moved = tmp_path / "elsewhere" / "run"
  shutil.copytree(finished_run, moved)
  resumed = _train(f"run_dir={moved}", "num_train_steps=5", "checkpoint.save_every_steps=1",
                   "checkpoint.max_to_keep=5", "--resume")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  summary = _summary(resumed.stdout)
  assert summary["start_step"] == 4 and summary["steps"] == 5
  assert (moved / "checkpoints" / "5").is_dir() and not (finished_run / "checkpoints" / "5").exists()


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(finished_run, tmp_path):
  run_dir = tmp_path / "run"
  shutil.copytree(finished_run, run_dir)
  _damage_manifest(run_dir / "checkpoints" / "4")
  resumed = _train(f"run_dir={run_dir}", "num_train_steps=5", "checkpoint.save_every_steps=1",
                   "checkpoint.max_to_keep=5", "--resume")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"skipping damaged checkpoint {run_dir / 'checkpoints' / '4'}" in resumed.stdout
  assert "manifest.ocdbt" in resumed.stdout and "Traceback" not in resumed.stderr
  assert _summary(resumed.stdout)["start_step"] == 3


def test_resume_with_nothing_to_resume_leaves_no_empty_checkpoint_folder(tmp_path):
  failed = _train(f"run_dir={tmp_path / 'new'}", "--resume", timeout=120)
  assert failed.returncode == 2 and "no checkpoint" in failed.stderr and "Traceback" not in failed.stderr
  assert not (tmp_path / "new").exists()


def test_a_non_finite_loss_stops_training_and_saves_nothing_over_the_last_good_checkpoint(tmp_path, monkeypatch):
  from zett.train import loop
  from zett.train.config import load_train_config
  config = load_train_config(TINY_CONFIG, [f"run_dir={tmp_path / 'run'}", "num_train_steps=6",
                                           "checkpoint.save_every_steps=2", *_QUIET])
  real_prepare = loop.prepare

  def prepare_with_a_step_that_diverges(*args, **kwargs):
    run = real_prepare(*args, **kwargs)
    real_step = run.train_step

    def step(state, batch, base_params):
      state, metrics = real_step(state, batch, base_params)
      if int(state.step) >= 3:  # from the third update on, as if the weights had blown up
        metrics = dict(metrics, loss=jnp.float32("nan"))
      return state, metrics
    return dataclasses.replace(run, train_step=step)
  monkeypatch.setattr(loop, "prepare", prepare_with_a_step_that_diverges)
  with pytest.raises(loop.TrainingDivergedError, match=r"diverged by step 3: loss is nan.*step 2 in") as error:
    loop.train(config, log=lambda _: None)
  assert "\n" not in str(error.value)
  checkpoints = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
  assert checkpoints == [2] and not (tmp_path / "run" / "hypernet").exists()
