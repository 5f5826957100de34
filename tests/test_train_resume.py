"""Exact resume through the CLI: 20 steps straight == 10ish steps, SIGTERM, --resume to 20 (bit for bit)."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from zett.hypernet import load_hypernetwork

from tests._train_helpers import REPO, subprocess_env, zett_train_command

pytestmark = pytest.mark.slow


def _common(run_dir):
  return [f"run_dir={run_dir}", "num_train_steps=20", "checkpoint.save_every_steps=100", "logging.every_steps=1",
          "logging.progress_bar=false", "logging.tensorboard=false"]


def _train_records(run_dir):
  path = run_dir / "metrics.jsonl"
  if not path.is_file():
    return []
  lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
  return [r for r in lines if r["kind"] == "train"]


def test_sigterm_and_resume_give_identical_parameters(tmp_path):
  env = subprocess_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  done = subprocess.run(zett_train_command(*_common(straight), "eval.every_steps=0"), env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]

  # Evaluating every step (3 sampled tokenizers + the base's) slows the run down enough to land the signal in the
  # middle; evaluation never touches the training state, data or sampler.
  slow_eval = ("eval.every_steps=1", "eval.num_sampled_tokenizers=3")
  process = subprocess.Popen(zett_train_command(*_common(interrupted), *slow_eval), env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None:
    if any(r["step"] >= 10 for r in _train_records(interrupted)):
      process.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  summary = json.loads(stdout[stdout.index("{\n"):])
  assert summary["stopped_by_signal"] and 10 <= summary["steps"] < 20, summary
  # A stopped leg leaves its latest hypernetwork exported (loadable, sha256 checked); the resumed run replaces it.
  stopped_config = load_hypernetwork(interrupted / "hypernet").config
  assert stopped_config.num_layers >= 1
  stopped_weights = load_file(str(interrupted / "hypernet" / "hypernet.safetensors"))

  resumed = subprocess.run(zett_train_command(*_common(interrupted), *slow_eval, "--resume"), env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  expected = load_file(str(straight / "hypernet" / "hypernet.safetensors"))
  got = load_file(str(interrupted / "hypernet" / "hypernet.safetensors"))
  assert expected.keys() == got.keys() == stopped_weights.keys()
  assert any(not np.array_equal(got[name], stopped_weights[name]) for name in got)  # training went on
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  losses = {r["step"]: r["loss"] for r in _train_records(straight)}
  for record in _train_records(interrupted):
    assert record["loss"] == losses[record["step"]], record["step"]

  # Resuming a finished run, or starting over an existing run without --resume, are clear errors.
  again = subprocess.run(zett_train_command(*_common(interrupted), *slow_eval), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "pass --resume" in again.stderr
