"""`zett apply`: carry a transfer made on a base model over to its fine-tuned variant (`zett.apply`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--base", required=True, help="the base model the transfer was made on")
  parser.add_argument("--transferred", required=True, help="folder written by `zett transfer` for --base")
  parser.add_argument("--finetuned", required=True, help="a fine-tuned variant of --base (same vocabulary)")
  parser.add_argument("--out", required=True, help="output folder (Hugging Face format)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
  parser.add_argument("--no-progress", action="store_true")
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
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
