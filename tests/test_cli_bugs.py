"""Only a `ZettError` (or a failed system call on the user's file system) is a one-line user error, exit code 2;
any other exception is a bug and keeps its traceback. zett's log messages reach stderr during a command."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys

import pytest

from tests.test_cli_ranges import _ROOT, _env
from zett import cli
from zett.cli import eval as eval_command
from zett.config import ConfigError

_EVAL = ["eval", "model", "--text", "text.txt"]  # a complete `zett eval` command line; run_eval is replaced


def _run_eval_raising(monkeypatch, error: BaseException):
  def run_eval(args):
    raise error
  monkeypatch.setattr(eval_command, "run", run_eval)
  return cli.main(_EVAL)


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ValueError("a bug: operands could not be broadcast"),
                                   KeyError("a bug"), OSError("a bug: no errno")])
def test_an_unexpected_exception_propagates(monkeypatch, capsys, error):
  with pytest.raises(type(error), match="a bug"):
    _run_eval_raising(monkeypatch, error)
  assert "error:" not in capsys.readouterr().err


def test_a_zett_error_is_one_line_and_exit_code_2(monkeypatch, capsys):
  assert _run_eval_raising(monkeypatch, ConfigError("config.yaml: unknown key(s) lr")) == 2
  assert capsys.readouterr().err == "zett eval: error: config.yaml: unknown key(s) lr\n"


def test_a_zett_error_keeps_its_traceback_with_debug(monkeypatch):
  def run_eval(args):
    raise ConfigError("config.yaml: unknown key(s) lr")
  monkeypatch.setattr(eval_command, "run", run_eval)
  with pytest.raises(ConfigError):
    cli.main([*_EVAL, "--debug"])


def test_a_failed_system_call_is_one_line(monkeypatch, capsys):
  full = OSError(errno.ENOSPC, "No space left on device", "/out/model.safetensors")
  assert _run_eval_raising(monkeypatch, full) == 2
  assert capsys.readouterr().err == "zett eval: error: /out/model.safetensors: No space left on device\n"


def test_ctrl_c_exits_130(monkeypatch, capsys):
  assert _run_eval_raising(monkeypatch, KeyboardInterrupt()) == 130
  assert capsys.readouterr().err == "interrupted\n"


def test_log_messages_reach_stderr_during_a_command_only(monkeypatch, capsys):
  def run_eval(args):
    logging.getLogger("zett.transfer").info("using the hypernetwork shipped for m")
    logging.getLogger("zett.train.loop").warning("loss spiked")
    logging.getLogger("zett.transfer").debug("not shown")
    return 0
  monkeypatch.setattr(eval_command, "run", run_eval)
  assert cli.main(_EVAL) == 0
  assert capsys.readouterr().err == ("zett eval: using the hypernetwork shipped for m\n"
                                     "zett eval: warning: loss spiked\n")
  zett_logger = logging.getLogger("zett")  # left as it was: tests and library users run many commands in a process
  assert not zett_logger.handlers and zett_logger.propagate and zett_logger.level == logging.NOTSET


_BUGGY_PROCESS = """
import sys
from zett import cli
from zett.cli import eval as eval_command
def run_eval(args):
  raise RuntimeError("a bug in run_eval")
eval_command.run = run_eval
sys.exit(cli.main(sys.argv[1:]))
"""


def test_the_real_process_shows_a_bug_with_its_traceback():
  process = subprocess.run([sys.executable, "-c", _BUGGY_PROCESS, *_EVAL], capture_output=True, text=True, cwd=_ROOT,
                           env=_env(), timeout=300)
  assert process.returncode == 1, process.stderr
  assert "Traceback (most recent call last)" in process.stderr
  assert process.stderr.strip().splitlines()[-1] == "RuntimeError: a bug in run_eval"
  assert "error:" not in process.stderr.replace("RuntimeError:", "")
