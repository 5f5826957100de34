"""`zett transfer`, `zett eval` and `zett apply` end to end on tiny folders, including bad input."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from zett.hypernet import config_for_base, init_hypernet, save_hypernet
from tests.transfer_setup import target_tokenizer, tiny_base
from zett.cli import main
from zett.interop.hf import save_pretrained
from zett.models.load import load_model
from zett.stdlib_source import stdlib_text


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("assets")
  base = tiny_base()
  save_pretrained(base, root / "base")
  # A "fine-tuned" variant: every weight moved a little (embeddings and body).
  rng = np.random.default_rng(5)
  tuned_params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.01 * rng.normal(size=x.shape).astype(np.float32),
                                        base.params)
  save_pretrained(type(base)(**{**base.__dict__, "params": tuned_params}), root / "tuned")
  target_tokenizer().to_hf(root / "target")
  (root / "text.txt").write_text(stdlib_text(("shlex.py",))[:3000])
  return root


def test_transfer_eval_and_apply_end_to_end(assets, tmp_path, capsys):
  out = tmp_path / "transferred"
  code = main(["transfer", "--base", str(assets / "base"), "--tokenizer", str(assets / "target"), "--out", str(out),
               "--method", "fvt", "--no-progress", "--eval-text", str(assets / "text.txt")])
  assert code == 0
  assert "bits/byte" in (out / "README.md").read_text()  # the evaluation went into the model card
  record = json.loads((out / "zett_transfer.json").read_text())
  assert record["method"] == "fvt" and len(record["evaluation"]) == 2

  report = tmp_path / "eval.json"
  code = main(["eval", str(assets / "base"), str(out), "--text", str(assets / "text.txt"), "--json", str(report),
               "--png", str(tmp_path / "eval.png")])
  assert code == 0
  results = json.loads(report.read_text())["results"]
  assert [r["label"] for r in results] == ["base", "transferred"]
  assert results[1]["relative_length"] < 1.0  # the bigger target vocabulary makes shorter sequences
  assert "bits/byte" in capsys.readouterr().out

  applied = tmp_path / "applied"
  code = main(["apply", "--base", str(assets / "base"), "--transferred", str(out), "--finetuned",
               str(assets / "tuned"), "--out", str(applied), "--no-progress"])
  assert code == 0
  # FVT is linear: carrying the transfer over equals transferring the fine-tuned model directly.
  from zett.transfer import transfer
  tuned = load_model(assets / "tuned")
  direct = transfer(tuned, assets / "target", method="fvt", progress=False)
  got = load_model(applied)
  for name in ("embed_tokens", "lm_head"):
    np.testing.assert_allclose(np.asarray(got.params[name]), np.asarray(direct.params[name]), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(got.params["layers"]["q_proj"]),
                                np.asarray(tuned.params["layers"]["q_proj"]))  # body from the fine-tuned model


def test_apply_with_hypernetwork_gives_exact_deltas_to_identical_and_special_tokens(assets):
  from zett.apply import apply_transfer
  from zett.transfer import transfer_with_record
  base, tuned = load_model(assets / "base"), load_model(assets / "tuned")
  config = config_for_base(base, hidden_size=32, num_layers=1)
  params = init_hypernet(config, base.embeddings, jax.random.key(0))
  params = jax.tree_util.tree_map(lambda x: x + 0.05, params)  # non-zero heads: a non-linear transfer
  transferred, record = transfer_with_record(base, assets / "target", hypernet=(config, params), progress=False)
  applied, _ = apply_transfer(base, transferred, tuned, record.to_json(), tokenizer=assets / "target",
                              progress=False)
  target = target_tokenizer()
  base_vocab = base.tokenizer.backend.get_vocab()
  delta = np.asarray(tuned.params["embed_tokens"]) - np.asarray(base.params["embed_tokens"])
  moved = np.asarray(applied.params["embed_tokens"]) - np.asarray(transferred.params["embed_tokens"])
  checked = 0
  for piece, target_id in target.backend.get_vocab().items():
    if piece in base_vocab:  # identical token (or special with the same content)
      np.testing.assert_allclose(moved[target_id], delta[base_vocab[piece]], atol=1e-6)
      checked += 1
  assert checked > 100


def _error(capsys) -> str:
  return capsys.readouterr().err


def test_bad_input_gives_one_clear_error_and_no_folder(assets, tmp_path, capsys):
  out = tmp_path / "out"
  common = ["--base", str(assets / "base"), "--out", str(out), "--no-progress"]
  assert main(["transfer", "--tokenizer", str(tmp_path / "missing.json"), "--method", "fvt", *common]) == 2
  assert "missing.json: no such file" in _error(capsys)
  assert main(["transfer", "--tokenizer", str(assets / "target"), "--max-memory-gb", "0.0001", *common]) == 2
  assert "GiB" in _error(capsys)
  other = tiny_base(seed=1)
  config = config_for_base(other, hidden_size=32, num_layers=1)
  hypernet = save_hypernet(tmp_path / "hn", config, init_hypernet(config, other.embeddings, jax.random.key(0)))
  assert main(["transfer", "--tokenizer", str(assets / "target"), "--hypernet", str(hypernet), *common]) == 2
  assert "trained for base weights" in _error(capsys)
  assert not out.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hn"]  # no staging leftovers either

  out.mkdir()
  assert main(["transfer", "--tokenizer", str(assets / "target"), "--method", "mean", *common]) == 2
  assert "exists" in _error(capsys) and list(out.iterdir()) == []
  assert main(["transfer", "--tokenizer", str(assets / "target"), "--method", "mean", "--overwrite", *common]) == 0
  assert (out / "model.safetensors").is_file()


# Runs the real `zett transfer`, but hangs right after the weights are written inside the staging folder.
_HANG_IN_EXPORT = """
import sys, time
import zett.interop.hf as hf
original = hf.write_safetensors
def write_then_hang(*args, **kwargs):
  original(*args, **kwargs)
  time.sleep(600)
hf.write_safetensors = write_then_hang
from zett.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_transfer_killed_mid_export_leaves_nothing_after_the_rerun(assets, tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time
  out = tmp_path / "transferred"
  argv = ["transfer", "--base", str(assets / "base"), "--tokenizer", str(assets / "target"), "--out", str(out),
          "--method", "fvt", "--no-progress"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen([sys.executable, "-c", _HANG_IN_EXPORT, *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".transferred.*.staging/**/model.safetensors")):
      assert process.poll() is None, process.stderr.read()
      assert time.monotonic() < deadline, "the export never started"
      time.sleep(0.05)
  finally:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
  assert list(tmp_path.glob(".transferred.*.staging")) and not out.exists()  # killed mid-export, as intended

  rerun = subprocess.run([sys.executable, "-m", "zett", *argv], env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == ["transferred"]  # no staging folder survives the rerun
  umask = os.umask(0)
  os.umask(umask)
  assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0700


def test_transfer_terminated_mid_export_cleans_up_before_it_exits(assets, tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time
  out = tmp_path / "transferred"
  argv = ["transfer", "--base", str(assets / "base"), "--tokenizer", str(assets / "target"), "--out", str(out),
          "--method", "fvt", "--no-progress"]
  process = subprocess.Popen([sys.executable, "-c", _HANG_IN_EXPORT, *argv], env={**os.environ, "JAX_PLATFORMS": "cpu"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while not list(tmp_path.glob(".transferred.*.staging/**/model.safetensors")):
    assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr
  assert list(tmp_path.iterdir()) == []  # the staging folder did not outlive the process
