"""`zett apply`: carry a transfer made on a base model over to its fine-tuned variant (`zett.apply`)."""

from __future__ import annotations

import argparse
import dataclasses

from zett.cli._options import add_options, load_options, option


@dataclasses.dataclass(frozen=True)
class ApplyOptions:
  """The three models `zett apply` combines and where the result goes."""

  base: str = option("", required=True)
  """The base model the transfer was made on."""
  transferred: str = option("", required=True)
  """Folder written by `zett transfer` for base."""
  finetuned: str = option("", required=True)
  """A fine-tuned variant of base (same vocabulary)."""
  out: str = option("", required=True)
  """Output folder (Hugging Face format)."""
  overwrite: bool = False
  """Replace an existing output folder."""
  progress: bool = True
  """Show progress bars."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, ApplyOptions)


def run(args: argparse.Namespace) -> int:
  from zett.apply import apply_transfer, read_transfer_record
  from zett.models.load import load_model
  from zett.transfer import check_output_folder, export

  options: ApplyOptions = load_options(ApplyOptions, args)
  out = check_output_folder(options.out, options.overwrite)
  record = read_transfer_record(options.transferred)
  base, transferred = load_model(options.base), load_model(options.transferred)
  finetuned = load_model(options.finetuned)
  model, new_record = apply_transfer(
    base, transferred, finetuned, record, tokenizer=options.transferred, progress=options.progress
  )
  export(model, new_record, out, overwrite=options.overwrite)
  print(f"wrote {out} ({new_record.method})")
  return 0
