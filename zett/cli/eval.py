"""`zett eval`: bits per byte and tokens per byte of models on the same text (`zett.eval_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zett.cli import int_range
from zett.errors import UsageError

_TEXT_BYTES = int_range(1, 1 << 40)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "models",
    nargs="+",
    metavar="MODEL_OR_DIR",
    help="models to compare (the first is the reference for relative length)",
  )
  parser.add_argument("--text", required=True, help="text file (.txt/.jsonl) or a datasets name")
  parser.add_argument("--max-bytes", type=_TEXT_BYTES, default=200_000, help="use at most this many bytes of text")
  parser.add_argument("--max-length", type=int_range(2, 1 << 20), default=512, help="tokens per evaluation window")
  parser.add_argument("--batch-size", type=int_range(1, 4096), default=8, help="evaluation windows per forward pass")
  parser.add_argument("--json", default="eval.json", help="where to write the JSON results")
  parser.add_argument("--png", default="eval.png", help="where to write the bar chart")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
  from zett.eval_report import evaluate_models, format_table, read_texts, write_bar_chart, write_json
  from zett.models.load import load_model

  for flag, path in (("--json", args.json), ("--png", args.png)):  # before the evaluation, not after it
    check_output_file(flag, path)
  texts = read_texts(args.text, max_bytes=args.max_bytes)
  models = [(_label(spec), load_model(spec)) for spec in args.models]
  results = evaluate_models(models, texts, max_length=args.max_length, batch_size=args.batch_size)
  print(format_table(results))
  write_json(results, args.json, text_source=args.text)
  try:
    write_bar_chart(results, args.png)
  except ImportError:  # matplotlib is the optional `plot` extra
    print(f"wrote {args.json}; no chart: install matplotlib (pip install 'zett[plot]') for {args.png}")
    return 0
  print(f"wrote {args.json} and {args.png}")
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
