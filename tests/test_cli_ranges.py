"""Every numeric flag and config field of every command has a checked range: a bad value is one line naming
the flag and the allowed range, exit code 2, no traceback, before any work (the real `zett` entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HUGE = "1" + "0" * 23  # 1e23 written as an integer
BAD = ("0", "-1", "nan", "inf", "1e23", HUGE)
BAD_BUT_ZERO = tuple(v for v in BAD if v != "0")  # flags where 0 has a meaning (a seed, "off", greedy)

# command -> (arguments that are otherwise complete, {flag: bad values})
COMMANDS = {
    "transfer": (["transfer", "--base", "b", "--tokenizer", "t", "--out", "o"],
                 {"--batch-size": BAD + ("1000000000",), "--max-memory-gb": BAD, "--seed": BAD_BUT_ZERO,
                  "--eval-max-bytes": BAD}),
    "eval": (["eval", "m", "--text", "t"], {"--max-bytes": BAD, "--max-length": BAD, "--batch-size": BAD}),
    "dynamic": (["dynamic", "--text", "t"],
                {"--reduction": BAD_BUT_ZERO, "--merges": BAD_BUT_ZERO, "--min-frequency": BAD,
                 "--max-token-length": BAD_BUT_ZERO, "--batch-size": BAD, "--max-batches": BAD, "--max-length": BAD,
                 "--prompt-fraction": BAD, "--cache-size": BAD_BUT_ZERO, "--generate": BAD_BUT_ZERO}),
    "generate": (["generate", "--model", "m", "--vocab", "v", "--prompt", "p"],
                 {"--max-new-tokens": BAD, "--temperature": BAD_BUT_ZERO, "--sample-top-k": BAD,
                  "--seed": BAD_BUT_ZERO, "--candidates": BAD}),
    "serve": (["serve", "--model", "m"], {"--port": BAD + ("99999", "65536")}),  # 99999 used to listen on 34463
    "train": (["train", "configs/tiny.yaml"],
              {"--num-processes": BAD, "--process-id": BAD_BUT_ZERO, "--distributed-timeout": BAD, "--devices": BAD,
               "--device-memory-gib": BAD}),
}
# Service settings go through `--set KEY=VALUE`.
SERVE_SETTINGS = {"max_body_bytes": BAD, "max_tokens_per_request": BAD, "max_new_tokens": BAD,
                  "request_timeout_s": BAD, "max_job_results_bytes": BAD, "cache_size": BAD_BUT_ZERO,
                  "job_retention_s": BAD_BUT_ZERO}
# Config fields go through the same checks as dotted overrides (key=value).
TRAIN_FIELDS = {"data.batch_size": BAD + ("100000000",), "data.sequence_length": BAD, "optimizer.learning_rate": BAD,
                "num_train_steps": BAD, "sampler.vocab_size": BAD, "hypernet.surface_max_length": BAD}

# Runs every case through `zett.cli.main` in one interpreter per command (a process per case would take minutes).
_DRIVER = """
import contextlib, io, json, sys
from zett.cli import main
results = []
for argv in json.loads(sys.argv[1]):
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      code = main(argv)
    except SystemExit as e:
      code = e.code
  results.append([code, err.getvalue()])
print(json.dumps(results))
"""
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return {**{k: v for k, v in os.environ.items() if k != "ZETT_API_KEY"}, "JAX_PLATFORMS": "cpu"}


def _cases(command):
  base, flags = COMMANDS[command]
  cases = [(flag, value, base + [f"{flag}={value}"]) for flag, values in flags.items() for value in values]
  if command == "serve":
    cases += [(key, value, base + ["--set", f"{key}={value}"]) for key, values in SERVE_SETTINGS.items()
              for value in values]
  if command == "train":
    cases += [(key, value, base + [f"{key}={value}"]) for key, values in TRAIN_FIELDS.items() for value in values]
  return cases


def _assert_one_clear_line(code, stderr, name, value):
  assert code == 2, (name, value, code, stderr)
  assert "Traceback" not in stderr, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and name.lstrip("-").split(".")[-1] in lines[0], (name, value, stderr)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_numeric_flag_refuses_zero_negative_nan_inf_and_huge(command, tmp_path):
  cases = _cases(command)
  process = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([argv for _, _, argv in cases])],
                           capture_output=True, text=True, cwd=_ROOT, env=_env(), timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  for (name, value, _), (code, stderr) in zip(cases, json.loads(process.stdout)):
    _assert_one_clear_line(code, stderr, name, value)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_real_process_exits_2_with_one_line(command):
  name, value, argv = _cases(command)[-1]
  process = subprocess.run([sys.executable, "-m", "zett", *argv], capture_output=True, text=True, cwd=_ROOT,
                           env=_env(), timeout=300)
  _assert_one_clear_line(process.returncode, process.stderr, name, value)
  assert "allowed" in process.stderr or "must be" in process.stderr or "expected" in process.stderr
