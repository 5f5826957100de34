"""The `zett` command. Thin: each subcommand parses its arguments and calls one library function.

One module per command (`zett.cli.train`, `.transfer`, `.eval`, `.apply`, `.dynamic`, `.generate`, `.data`,
`.serve`), each with `add_arguments(parser)` and `run(args)`. A command's options are one frozen dataclass with a
docstring per field, filled from `--config FILE.yaml`, its flags and `KEY=VALUE` arguments (`zett.cli._options`).

Subcommand modules are imported only when their command runs, so `zett --help` stays fast and a
missing optional dependency (say, the HTTP server) only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable

from zett.errors import ZettError

# command -> (module with `add_arguments(parser)` and `run(args)`, one-line help)
_COMMANDS = {
  "train": ("zett.cli.train", "train a hypernetwork for a base model"),
  "transfer": ("zett.cli.transfer", "transfer a model to a new tokenizer and export it in Hugging Face format"),
  "eval": ("zett.cli.eval", "bits per byte and tokens per byte of models on the same text"),
  "apply": ("zett.cli.apply", "carry a transfer made on a base model over to its fine-tuned variant"),
  "dynamic": ("zett.cli.dynamic", "dynamic (batch-level BPE) tokenization"),
  "generate": ("zett.cli.generate", "generate with a large vocabulary through an ANN index"),
  "data": ("zett.cli.data", "build the training corpus offline (zett data prepare)"),
  "serve": ("zett.cli.serve", "serve embeddings, transfer, tokenization, generation over HTTP"),
}


class _Parser(argparse.ArgumentParser):
  """Usage errors are one line naming the flag (no usage dump; `--help` has it), exit code 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _build_parser(argv: list[str]) -> argparse.ArgumentParser:
  parser = _Parser(prog="zett", description="Free pretrained language models from their tokenizers.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  wanted = next((a for a in argv if not a.startswith("-")), None)
  for name, (module, help_text) in _COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    if name == wanted:
      importlib.import_module(module).add_arguments(p)
  return parser


def _interrupt(signum, frame):
  raise KeyboardInterrupt


class _LineFormatter(logging.Formatter):
  """`PROG: message`, and `PROG: warning: message` above INFO: the shape of the one-line errors."""

  def __init__(self, prog: str):
    super().__init__()
    self.prog = prog

  def format(self, record: logging.LogRecord) -> str:
    level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
    return f"{self.prog}: {level}{super().format(record)}"


def _log_to_stderr(prog: str) -> Callable[[], None]:
  """Sends INFO and above of the `zett` logger (every module's `logging.getLogger(__name__)`, zett.hypernet and
  zett.train included) to stderr; returns the function that undoes it.

  Only for the run of one command (tests call `main` many times in one process), and not propagated: orbax puts a
  handler on the root logger, which would print every line twice.
  """
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(_LineFormatter(prog))
  logger = logging.getLogger("zett")
  level, propagate = logger.level, logger.propagate
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False

  def undo():
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate

  return undo


def run_command(prog: str, command: Callable[[], int | None], debug: bool = False) -> int:
  """Runs one command the way every zett entry point does, and returns its exit code.

  zett's log messages go to stderr as `PROG: message`. A `ZettError` (the message names the file, flag or setting
  at fault) and a failed system call on the user's file system (a full disk, a read-only folder) print one line
  `PROG: error: ...` and return 2; Ctrl-C and SIGTERM print `interrupted` and return 130. Any other exception is a
  bug and propagates with its traceback, as does every exception when `debug` is set.
  """
  # SIGTERM unwinds like Ctrl-C, so `finally` blocks remove staging folders before the process goes (training
  # and the server install their own handlers while they run).
  in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be set there
  previous_handler = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
  stop_logging = _log_to_stderr(prog)
  try:
    return int(command() or 0)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except ZettError as e:
    if debug:
      raise
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if debug or e.errno is None:  # no errno: not a system call that failed, so not the user's file system
      raise
    where = f"{e.filename}: " if e.filename else ""
    print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
    return 2
  finally:
    stop_logging()
    if in_main_thread:
      signal.signal(signal.SIGTERM, previous_handler)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _build_parser(argv)
  # Bare arguments after a flag (`zett eval A --text T B`, `zett train C.yaml --resume key=value`) are arguments too:
  # argparse takes one run of positionals only.
  args, extra = parser.parse_known_args(argv)
  if extra and (not hasattr(args, "arguments") or any(a.startswith("-") for a in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if extra:
    args.arguments = [*args.arguments, *extra]
  if args.command is None:
    parser.print_help()
    return 2
  command = importlib.import_module(_COMMANDS[args.command][0]).run
  return run_command(f"zett {args.command}", lambda: command(args), debug=getattr(args, "debug", False))


if __name__ == "__main__":
  sys.exit(main())
