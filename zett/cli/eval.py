"""`zett eval`: bits per byte and tokens per byte of models on the same text (`zett.eval_report`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from zett.cli._options import add_options, load_options, option
from zett.config import check_ranges
from zett.errors import UsageError


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """The models `zett eval` compares, the text and where the report goes."""

  models: tuple[str, ...] = option((), required=True, positional=True, metavar="MODEL_OR_DIR")
  """Models to compare (the first is the reference for relative length)."""
  text: str = option("", required=True)
  """Text file (.txt/.jsonl) or a datasets name."""
  max_bytes: int = option(200_000, low=1, high=1 << 40)
  """Use at most this many bytes of text."""
  max_length: int = option(512, low=2, high=1 << 20)
  """Tokens per evaluation window."""
  batch_size: int = option(8, low=1, high=4096)
  """Evaluation windows per forward pass."""
  json: str = "eval.json"
  """Where to write the JSON results."""
  png: str = "eval.png"
  """Where to write the bar chart."""

  def __post_init__(self):
    check_ranges(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, EvalOptions)


def run(args: argparse.Namespace) -> int:
  from zett.eval_report import evaluate_models, format_table, read_texts, write_bar_chart, write_json
  from zett.models.load import load_model

  options: EvalOptions = load_options(EvalOptions, args)
  for flag, path in (("--json", options.json), ("--png", options.png)):  # before the evaluation, not after it
    check_output_file(flag, path)
  texts = read_texts(options.text, max_bytes=options.max_bytes)
  models = [(_label(spec), load_model(spec)) for spec in options.models]
  results = evaluate_models(models, texts, max_length=options.max_length, batch_size=options.batch_size)
  print(format_table(results))
  write_json(results, options.json, text_source=options.text)
  try:
    write_bar_chart(results, options.png)
  except ImportError:  # matplotlib is the optional `plot` extra
    print(f"wrote {options.json}; no chart: install matplotlib (pip install 'zett[plot]') for {options.png}")
    return 0
  print(f"wrote {options.json} and {options.png}")
  return 0


def check_output_file(flag: str, path: str | Path) -> None:
  """Refuses an output file whose folder is missing or not writable, naming the flag."""
  import os

  folder = Path(path).absolute().parent
  if not folder.is_dir():
    raise UsageError(
      f"{flag} {path}: the folder {folder} does not exist"
      if not folder.exists()
      else f"{flag} {path}: {folder} is not a folder"
    )
  if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
    raise UsageError(f"{flag} {path}: not writable here (permission denied)")


def _label(spec: str) -> str:
  path = Path(spec)
  return path.name if path.exists() else spec
