"""`zett transfer`: transfer a model to a new tokenizer and export it in Hugging Face format (`zett.transfer`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from zett.cli._options import add_options, load_options, option
from zett.config import ConfigError, check_ranges
from zett.errors import UsageError
from zett.transfer import METHODS

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TransferOptions:
  """What `zett transfer` reads, writes and how it embeds the new tokens."""

  base: str = option("", required=True)
  """Base model: Hugging Face folder, .gguf file, smollm2-135m or a hub name."""
  tokenizer: str = option("", required=True)
  """Target tokenizer: Hugging Face folder, tokenizer.json, SentencePiece .model, .gguf or .tiktoken."""
  out: str = option("", required=True)
  """Output folder (Hugging Face format)."""
  hypernet: str | None = None
  """Hypernetwork folder (from `zett train`) or published name; implies method hypernet (default: the one zett ships
  for the base, if any)."""
  method: str | None = option(choices=METHODS)
  """How to embed the new tokens. Default: hypernet (the given hypernetwork, else the one shipped for the base),
  else fvt."""
  overwrite: bool = False
  """Replace an existing output folder."""
  batch_size: int | None = option(low=1, high=1 << 20)
  """Target tokens per batch (default: sized to memory)."""
  max_memory_gb: float | None = option(low=0, high=1 << 20, low_open=True)
  """Memory budget in GiB (default: what the OS reports free)."""
  seed: int = option(0, low=0, high=2**32 - 1)
  """Seed of the random baseline."""
  eval_text: str | None = None
  """Also evaluate base and transferred model on this text (file or dataset)."""
  eval_max_bytes: int = option(200_000, low=1, high=1 << 40)
  """Bytes of eval_text to use."""
  progress: bool = True
  """Show progress bars."""

  def __post_init__(self):
    check_ranges(self)
    if self.method is not None and self.method not in METHODS:
      raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, TransferOptions)


def run(args: argparse.Namespace) -> int:
  from zett.models.load import load_model
  from zett.transfer import check_output_folder, export, transfer_with_record
  from zett.transfer_vocab import as_tokenizer

  options: TransferOptions = load_options(TransferOptions, args)
  out = check_output_folder(options.out, options.overwrite)  # before any expensive work
  if options.hypernet and options.method not in (None, "hypernet"):
    raise UsageError(f"--hypernet was given but --method is {options.method}; drop one of them")
  target = as_tokenizer(options.tokenizer, "target tokenizer")  # a missing tokenizer fails before loading the model
  texts = None
  if options.eval_text:  # a bad --eval-text fails before the transfer, not after it
    from zett.eval_report import read_texts

    texts = read_texts(options.eval_text, max_bytes=options.eval_max_bytes)
  base = load_model(options.base)
  hypernet, method = _choose_hypernet(options, base)
  max_memory = None if options.max_memory_gb is None else int(options.max_memory_gb * 2**30)
  model, record = transfer_with_record(
    base,
    target,
    hypernet=hypernet,
    method=method,
    batch_size=options.batch_size,
    max_memory_bytes=max_memory,
    seed=options.seed,
    progress=options.progress,
  )
  if texts is not None:
    from zett.eval_report import evaluate_models, format_table

    results = evaluate_models([(f"{base.name} (original)", base), (f"{model.name} ({method})", model)], texts)
    print(format_table(results))
    record = dataclasses.replace(record, evaluation=[dataclasses.asdict(r) for r in results])
  export(model, record, out, overwrite=options.overwrite)
  print(f"wrote {out} ({record.target_vocab_size:,} tokens, method {method}, {record.seconds:.1f} s)")
  return 0


def _choose_hypernet(options: TransferOptions, base):
  """(hypernetwork folder or None, method): --hypernet, else the one shipped for this base, else FVT."""
  from zett.assets import shipped_hypernet_for

  if options.hypernet:
    return options.hypernet, "hypernet"
  if options.method not in (None, "hypernet"):
    return None, options.method
  shipped = shipped_hypernet_for(base)
  if shipped is not None:
    _log.info("using the hypernetwork shipped for %s (%s)", base.name, shipped)
    return str(shipped), "hypernet"
  if options.method == "hypernet":
    raise UsageError(f"--method hypernet: no hypernetwork ships for {base.name}; give --hypernet FOLDER")
  _log.info("no hypernetwork ships for %s and no --hypernet given: using the FVT baseline", base.name)
  return None, "fvt"
