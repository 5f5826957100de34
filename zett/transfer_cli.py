"""`zett transfer`, `zett eval` and `zett apply`: argument parsing around `zett.transfer`, `zett.eval_report`
and `zett.apply` (each `run_*` returns an exit code; errors are `zett.errors.ZettError`s with clear messages)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from zett.cli import float_range, int_range
from zett.errors import UsageError
from zett.transfer import METHODS

_log = logging.getLogger(__name__)
_SEEDS = int_range(0, 2**32 - 1)
_TEXT_BYTES = int_range(1, 1 << 40)


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--base", required=True, help="base model: HF folder, .gguf file, smollm2-135m or hub name")
  parser.add_argument(
    "--tokenizer",
    required=True,
    help="target tokenizer: HF folder, tokenizer.json, SentencePiece .model, .gguf, .tiktoken",
  )
  parser.add_argument("--out", required=True, help="output folder (Hugging Face format)")
  parser.add_argument(
    "--hypernet",
    help="hypernetwork folder (from `zett train`); implies --method hypernet "
    "(default: the one zett ships for the base, if any)",
  )
  parser.add_argument(
    "--method", choices=METHODS, help="default: hypernet (--hypernet, else the shipped one for the base), else fvt"
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
  parser.add_argument(
    "--batch-size", type=int_range(1, 1 << 20), help="target tokens per batch (default: sized to memory)"
  )
  parser.add_argument(
    "--max-memory-gb",
    type=float_range(0, 1 << 20, low_open=True),
    help="memory budget (default: what the OS reports free)",
  )
  parser.add_argument("--seed", type=_SEEDS, default=0, help="seed of the random baseline")
  parser.add_argument("--eval-text", help="also evaluate base and transferred model on this text (file or dataset)")
  parser.add_argument("--eval-max-bytes", type=_TEXT_BYTES, default=200_000, help="bytes of --eval-text to use")
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run_transfer(args: argparse.Namespace) -> int:
  from zett.models.load import load_model
  from zett.transfer import check_output_folder, export, transfer_with_record
  from zett.transfer_vocab import as_tokenizer

  out = check_output_folder(args.out, args.overwrite)  # before any expensive work
  if args.hypernet and args.method not in (None, "hypernet"):
    raise UsageError(f"--hypernet was given but --method is {args.method}; drop one of them")
  target = as_tokenizer(args.tokenizer, "target tokenizer")  # a missing tokenizer fails before loading the model
  texts = None
  if args.eval_text:  # a bad --eval-text fails before the transfer, not after it
    from zett.eval_report import read_texts

    texts = read_texts(args.eval_text, max_bytes=args.eval_max_bytes)
  base = load_model(args.base)
  hypernet, method = _choose_hypernet(args, base)
  max_memory = None if args.max_memory_gb is None else int(args.max_memory_gb * 2**30)
  model, record = transfer_with_record(
    base,
    target,
    hypernet=hypernet,
    method=method,
    batch_size=args.batch_size,
    max_memory_bytes=max_memory,
    seed=args.seed,
    progress=not args.no_progress,
  )
  if texts is not None:
    from zett.eval_report import evaluate_models, format_table

    results = evaluate_models([(f"{base.name} (original)", base), (f"{model.name} ({method})", model)], texts)
    print(format_table(results))
    record = dataclasses.replace(record, evaluation=[dataclasses.asdict(r) for r in results])
  export(model, record, out, overwrite=args.overwrite)
  print(f"wrote {out} ({record.target_vocab_size:,} tokens, method {method}, {record.seconds:.1f} s)")
  return 0


def _choose_hypernet(args: argparse.Namespace, base):
  """(hypernetwork folder or None, method): --hypernet, else the one shipped for this base, else FVT."""
  from zett.assets import shipped_hypernet_for

  if args.hypernet:
    return args.hypernet, "hypernet"
  if args.method not in (None, "hypernet"):
    return None, args.method
  shipped = shipped_hypernet_for(base)
  if shipped is not None:
    _log.info("using the hypernetwork shipped for %s (%s)", base.name, shipped)
    return str(shipped), "hypernet"
  if args.method == "hypernet":
    raise UsageError(f"--method hypernet: no hypernetwork ships for {base.name}; give --hypernet FOLDER")
  _log.info("no hypernetwork ships for %s and no --hypernet given: using the FVT baseline", base.name)
  return None, "fvt"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_eval(args: argparse.Namespace) -> int:
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


def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--base", required=True, help="the base model the transfer was made on")
  parser.add_argument("--transferred", required=True, help="folder written by `zett transfer` for --base")
  parser.add_argument("--finetuned", required=True, help="a fine-tuned variant of --base (same vocabulary)")
  parser.add_argument("--out", required=True, help="output folder (Hugging Face format)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run_apply(args: argparse.Namespace) -> int:
  from zett.apply import apply_transfer, read_transfer_record
  from zett.models.load import load_model
  from zett.transfer import check_output_folder, export

  out = check_output_folder(args.out, args.overwrite)
  record = read_transfer_record(args.transferred)
  base, transferred, finetuned = load_model(args.base), load_model(args.transferred), load_model(args.finetuned)
  model, new_record = apply_transfer(
    base, transferred, finetuned, record, tokenizer=args.transferred, progress=not args.no_progress
  )
  export(model, new_record, out, overwrite=args.overwrite)
  print(f"wrote {out} ({new_record.method})")
  return 0
