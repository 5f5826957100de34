"""Every command's options are one dataclass: `--help` shows each field's docstring, and a `--config` YAML file,
flags and dotted `KEY=VALUE` overrides all reach the library call; a wrong key or value is one line, exit code 2."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import pytest

from tests.test_cli_ranges import _DRIVER, _ROOT, _env
from zett.cli import _COMMANDS, main
from zett.cli._options import keys
from zett.config import field_docs

# command -> (argv before --help, the options classes whose fields it documents)
_HELP = {
  "train": (["train"], ("zett.cli.train:TrainRunOptions", "zett.train.config:TrainConfig")),
  "transfer": (["transfer"], ("zett.cli.transfer:TransferOptions",)),
  "eval": (["eval"], ("zett.cli.eval:EvalOptions",)),
  "apply": (["apply"], ("zett.cli.apply:ApplyOptions",)),
  "dynamic": (["dynamic"], ("zett.cli.dynamic:DynamicOptions",)),
  "generate": (["generate"], ("zett.cli.generate:GenerateOptions",)),
  "data": (["data", "prepare"], ("zett.cli.data:PrepareOptions",)),
  "serve": (["serve"], ("zett.cli.serve:ServeOptions",)),
}


def _class(spec: str) -> type:
  module, name = spec.split(":")
  return getattr(importlib.import_module(module), name)


def _squeezed(text: str) -> str:
  return "".join(text.split())  # argparse wraps (even inside hyphenated words): compare without whitespace


def test_every_command_is_covered():
  assert set(_HELP) == set(_COMMANDS)


@pytest.mark.parametrize("command", list(_HELP))
def test_help_shows_every_fields_docstring(command, capsys):
  argv, classes = _HELP[command]
  with pytest.raises(SystemExit) as exit_:
    main([*argv, "--help"])
  assert exit_.value.code == 0
  shown = _squeezed(capsys.readouterr().out)
  for spec in classes:
    cls = _class(spec)
    for key, doc, _ in keys(cls):
      assert doc, f"{spec}: {key} has no docstring"
      assert _squeezed(doc) in shown, (command, key)
    assert field_docs(cls)  # the docs come from the class body, not from a help string beside the flag
  assert "--config" in shown and "KEY=VALUE" in shown


def test_generate_help_reaches_the_index_spec(capsys):
  with pytest.raises(SystemExit):
    main(["generate", "--help"])
  out = capsys.readouterr().out
  assert "index.kind:" in out and "index.candidates:" in out and "--candidates" in out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  from tests.transfer_setup import target_tokenizer, tiny_base
  from zett.interop.hf import save_pretrained
  from zett.stdlib_source import stdlib_text

  root = tmp_path_factory.mktemp("assets")
  save_pretrained(tiny_base(), root / "base")
  target_tokenizer().to_hf(root / "target")
  text = stdlib_text(("shlex.py",))[:6000]
  (root / "text.txt").write_text("\n\n".join(text[i : i + 300] for i in range(0, len(text), 300)))
  return root


def _recording(monkeypatch, module, name):
  """Wraps `module.name` so each call's keyword arguments are kept (the call still runs)."""
  calls = []
  real = getattr(module, name)

  def wrapper(*args, **kwargs):
    calls.append(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(module, name, wrapper)
  return calls


def test_transfer_config_file_flags_and_overrides_reach_the_transfer(assets, tmp_path, monkeypatch, capsys):
  import zett.transfer

  calls = _recording(monkeypatch, zett.transfer, "transfer_with_record")
  out = tmp_path / "out"
  config = tmp_path / "transfer.yaml"
  config.write_text(f"base: {assets / 'base'}\ntokenizer: {assets / 'target'}\nout: {out}\nmethod: fvt\nseed: 3\n"
                    "progress: false\n")
  # The file says fvt and seed 3; the command line says random (a KEY=VALUE), seed 11 (--set) and a batch size.
  assert main(["transfer", "--config", str(config), "method=random", "--set", "seed=11", "--batch-size", "64"]) == 0
  (call,) = calls
  assert (call["method"], call["seed"], call["batch_size"], call["progress"]) == ("random", 11, 64, False)
  assert json.loads((out / "zett_transfer.json").read_text())["method"] == "random"
  assert "method random" in capsys.readouterr().out


def test_dynamic_config_file_and_overrides_reach_the_evaluation(assets, tmp_path, monkeypatch, capsys):
  import zett.dynamic.run

  calls = _recording(monkeypatch, zett.dynamic.run, "evaluate_decoder")
  config = tmp_path / "dynamic.yaml"
  config.write_text(f"model: {assets / 'base'}\ntext: {assets / 'text.txt'}\nreduction: 0.25\nmax_batches: 1\n")
  assert main(["dynamic", "--config", str(config), "batch_size=2", "max_length=32", "--cache-size", "16"]) == 0
  (call,) = calls
  assert (call["target_reduction"], call["max_length"], call["prompt_fraction"]) == (0.25, 32, 0.5)
  out = capsys.readouterr().out
  assert "1 batch(es) of up to 2 paragraphs, target_reduction=0.25" in out and "cache hit rate" in out


def _bad_cases(d):
  (d / "unknown.yaml").write_text("text: t.txt\nreductoin: 0.2\n")
  (d / "bad-value.yaml").write_text("base: b\ntokenizer: t\nout: o\nseed: -1\n")
  (d / "list.yaml").write_text("- not a mapping\n")
  return [
    (["dynamic", "--text", "t.txt", "nosuch=1"], "unknown key(s) nosuch"),
    (["dynamic", "--config", str(d / "unknown.yaml")], "unknown key(s) reductoin"),
    (["dynamic", "--text", "t.txt", "batch_size=0"], "batch_size must be in [1, 4,096], got 0"),
    (["dynamic", "--text", "t.txt", "reduction=1"], "reduction must be in [0, 1), got 1.0"),
    (["dynamic", "--text", "t.txt", "batch_size=many"], "batch_size: expected an integer, got 'many'"),
    (["dynamic", "--text", "t.txt", "--reduction", "0.2", "merges=3"], "give one of --reduction, --merges"),
    (["dynamic", "--text", "t.txt", "--batch-size", "4", "batch_size=5"], "batch_size given twice"),
    (["dynamic", "--text", "t.txt", "max_length=[1"], "not a YAML value"),
    (["dynamic", "--config", str(d / "missing.yaml")], "missing.yaml does not exist"),
    (["dynamic", "--config", str(d / "list.yaml")], "must hold a mapping"),
    (["transfer", "--config", str(d / "bad-value.yaml")], "seed must be in [0, 4,294,967,295], got -1"),
    (["transfer", "--base", "b", "--tokenizer", "t", "--out", "o", "method=magic"], "method must be one of"),
    (["transfer", "--base", "b", "--tokenizer", "t"], "out is required: give --out, out=VALUE"),
    (["eval", "--text", "t"], "models is required"),
    (["generate", "--model", "m", "--vocab", "v", "--prompt", "p", "index.kind=annoy"], "kind must be pq, hnsw"),
    (["generate", "--model", "m", "--vocab", "v", "--prompt", "p", "index.nlist=3"], "unknown key(s) nlist"),
    (["serve", "--model", "m", "port=0"], "port must be in [1, 65,535], got 0"),
    (["serve", "--model", "m", "--set", "max_body_bytes=0"], "max_body_bytes must be a positive integer"),
    (["data", "prepare", "heldout_permille=1000"], "heldout_permille must be in [0, 999]"),
    (["train", "configs/tiny.yaml", "--dry-run", "optimizer.lr=1"], "unknown key(s) lr"),
    (["train", "--dry-run"], "give one training config"),
    (["train", "--config", "configs/tiny.yaml", "--dry-run", "num_train_steps=0"], "num_train_steps"),
  ]


def test_a_wrong_key_or_value_is_one_line_and_exit_code_2(tmp_path):
  cases = _bad_cases(tmp_path)
  process = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([argv for argv, _ in cases])],
                           capture_output=True, text=True, cwd=_ROOT, env=_env(), timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  for (argv, says), (code, stderr) in zip(cases, json.loads(process.stdout)):
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr and len(lines) == 1, (argv, code, stderr)
    assert lines[0].startswith(f"zett {argv[0]}: error: ") and says in lines[0], (argv, stderr)


def test_the_real_process_refuses_an_unknown_key_in_one_line(tmp_path):
  process = subprocess.run([sys.executable, "-m", "zett", "generate", "--model", "m", "--vocab", "v", "--prompt", "p",
                            "index.kind=annoy"], capture_output=True, text=True, cwd=_ROOT, env=_env(), timeout=300)
  assert process.returncode == 2 and "Traceback" not in process.stderr
  assert process.stderr.strip().splitlines() == [
    "zett generate: error: config.index: IndexSpec.kind must be pq, hnsw, hnsw-l2, ivf or flat, got 'annoy'"]


def test_every_number_of_a_command_declares_its_range():
  """A number without a declared range would get no flag; every command's own numbers have one (ServeOptions
  inherits the service settings, which check theirs in ServiceSettings.__post_init__)."""
  for _, classes in _HELP.values():
    cls = _class(classes[0])
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    for field in dataclasses.fields(cls):
      number = field.type in ("int", "float", "int | None", "float | None")
      assert field.name in inherited or not number or "range" in field.metadata, (cls.__name__, field.name)
