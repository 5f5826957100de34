"""`zett transfer`: transfer a model to a new tokenizer and export it in Hugging Face format (`zett.transfer`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from zett.cli import float_range, int_range
from zett.errors import UsageError
from zett.transfer import METHODS

_log = logging.getLogger(__name__)
_SEEDS = int_range(0, 2**32 - 1)
_TEXT_BYTES = int_range(1, 1 << 40)


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
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
