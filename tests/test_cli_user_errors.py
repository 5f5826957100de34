"""A user's mistake is one line naming the file or flag, exit code 2, no traceback, before any work: output paths
that cannot be written, malformed side files, text that is not UTF-8 text (the real `zett` entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from tests.test_cli_ranges import _DRIVER, _ROOT, _env


@pytest.fixture
def files(tmp_path):
  (tmp_path / "binary.txt").write_bytes(b"\x7fELF\0\0\1\0")
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
  (tmp_path / "docs.jsonl").write_text('{"body": "no text field"}\n')
  (tmp_path / "good.txt").write_text("some text\n")
  (tmp_path / "a-file").write_text("x")
  (tmp_path / "texts").mkdir()
  backend = tokenizers.Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  (tmp_path / "tok").mkdir()
  backend.save(str(tmp_path / "tok" / "tokenizer.json"))
  huge = tokenizers.Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 10**9}, merges=[("a", "b")]))
  huge.save(str(tmp_path / "huge-id.json"))
  (tmp_path / "badtok").mkdir()
  backend.save(str(tmp_path / "badtok" / "tokenizer.json"))
  (tmp_path / "badtok" / "tokenizer_config.json").write_text("{broken")
  return tmp_path


def _cases(d):
  transfer = ["transfer", "--base", "no-such-base-folder/", "--tokenizer", str(d / "tok")]
  return [
      (["eval", "m", "--text", str(d / "good.txt"), "--json", str(d / "missing" / "eval.json")],
       "--json", "missing does not exist"),
      (["eval", "m", "--text", str(d / "good.txt"), "--png", str(d / "a-file" / "eval.png")], "--png", "not a folder"),
      (["eval", "m", "--text", str(d / "binary.txt")], "binary.txt", "binary data, not text"),
      (["eval", "m", "--text", str(d / "latin1.txt")], "latin1.txt", "not UTF-8 text"),
      (["eval", "m", "--text", str(d / "docs.jsonl")], "docs.jsonl", 'line 1 has no "text" string field'),
      (["eval", "m", "--text", str(d / "texts" / "held_out")], "held_out", "no such text file"),
      (["dynamic", "--text", str(d / "binary.txt")], "binary.txt", "binary data, not text"),
      (["dynamic", "--text", str(d / "latin1.txt")], "latin1.txt", "not UTF-8 text"),
      ([*transfer, "--out", str(d / "a-file" / "out")], "a-file", "is a file"),
      ([*transfer, "--out", str(d / "out"), "--eval-text", str(d / "binary.txt")], "binary.txt", "binary data"),
      ([*transfer, "--out", str(d / "out"), "--eval-text", str(d / "latin1.txt")], "latin1.txt", "not UTF-8"),
      (["transfer", "--base", "b", "--tokenizer", str(d / "badtok"), "--out", str(d / "out")],
       "tokenizer_config.json", "not a valid JSON file"),
      (["eval", str(d / "texts" / "model"), "--text", str(d / "good.txt")], "model", "no such model file or folder"),
      (["eval", str(d / "missing.gguf"), "--text", str(d / "good.txt")], "missing.gguf", "no such"),
      ([*transfer[:4], str(d / "texts" / "tok"), "--out", str(d / "out")], "tok", "no such file or folder"),
      ([*transfer[:4], str(d / "huge-id.json"), "--out", str(d / "out")], "huge-id.json", "has id 1000000000"),
      (["train", "configs/tiny.yaml", f"run_dir={d / 'run'}", f"data.sources=[{{path: {d / 'binary.txt'}}}]"],
       "binary.txt", "binary data, not text"),
      (["train", "configs/tiny.yaml", f"run_dir={d / 'run'}", f"data.sources=[{{path: {d / 'latin1.txt'}}}]"],
       "latin1.txt", "not UTF-8 text"),
      (["generate", "--model", "m", "--vocab", str(d / "vocab"), "--prompt", "p", "--build-from",
        str(d / "missing.json")], "missing.json", "no such file"),
      (["generate", "--model", "m", "--vocab", str(d / "vocab"), "--prompt", "caf\udce9"], "--prompt",
       "not valid UTF-8"),
  ]


def test_user_mistakes_are_one_line_naming_the_file(files):
  cases = _cases(files)
  process = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([argv for argv, _, _ in cases])],
                           capture_output=True, text=True, cwd=_ROOT, env=_env(), timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  for (argv, names, says), (code, stderr) in zip(cases, json.loads(process.stdout)):
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr and len(lines) == 1, (argv, code, stderr)
    assert names in lines[0] and says in lines[0], (argv, stderr)
  # Nothing is left behind by a failed start.
  assert not (files / "out").exists() and not (files / "vocab").exists() and not (files / "run").exists()


def test_a_failed_vocabulary_build_leaves_no_empty_folder(tmp_path):
  from zett.ann.build import build_vocabulary
  with pytest.raises(ValueError, match="missing.json: no such file"):
    build_vocabulary(tmp_path / "vocab", None, str(tmp_path / "missing.json"))
  assert not (tmp_path / "vocab").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_location_is_refused_before_any_work(files):
  (files / "locked").mkdir(mode=0o555)
  process = subprocess.run([sys.executable, "-m", "zett", "transfer", "--base", "b", "--tokenizer", str(files / "tok"),
                            "--out", str(files / "locked" / "out")], capture_output=True, text=True, cwd=_ROOT,
                           env=_env(), timeout=300)
  assert process.returncode == 2 and "locked is not writable" in process.stderr and "Traceback" not in process.stderr
