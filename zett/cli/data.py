"""`zett data prepare`: build the training / held-out corpus from the Python stdlib and Debian's translated docs.

zett data prepare [--out data/corpus] [--languages en,de,ru,python] [--heldout-permille 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from zett.cli._options import add_options, load_options, option
from zett.config import check_ranges
from zett.data import KNOWN_LANGUAGES


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """Where `zett data prepare` reads the Debian packages and the standard library, and where the corpus goes."""

  out: str = "data/corpus"
  """Output folder (data/corpus is git-ignored)."""
  languages: str = "all"
  """Comma-separated language codes (listed above), 'python' for the standard-library code, or all."""
  heldout_permille: int = option(20, low=0, high=999)
  """Documents held out per 1000 (train.data.is_heldout); give training the same data.heldout_permille."""
  root: str = "/"
  """File system root holding the Debian packages and their dpkg database."""
  stdlib: str | None = None
  """Python standard-library folder (default: this Python's)."""
  progress: bool = True
  """Show progress bars."""

  def __post_init__(self):
    check_ranges(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
  prepare = sub.add_parser(
    "prepare",
    help="build the corpus: one parquet file per language, plus summary.json",
    description="Build the training / held-out corpus offline: Python standard-library "
    "code and Debian's translated documentation, man pages and fortunes. Languages: " + ", ".join(KNOWN_LANGUAGES),
  )
  add_options(prepare, PrepareOptions)


def _print_summary(summary: dict, out: str) -> None:
  print(f"{'language':<10} {'train docs':>10} {'train MB':>9} {'heldout docs':>12} {'heldout MB':>10}")
  for language, counts in summary["languages"].items():
    train, heldout = counts["train"], counts["heldout"]
    print(
      f"{language:<10} {train['documents']:>10} {train['bytes'] / 1e6:>9.2f} "
      f"{heldout['documents']:>12} {heldout['bytes'] / 1e6:>10.2f}"
    )
  dropped = ", ".join(f"{reason} {count}" for reason, count in summary["dropped"].items()) or "none"
  print(f"dropped documents: {dropped}")
  print(f"wrote {len(summary['files'])} parquet files and summary.json to {out} in {summary['wall_seconds']:.0f} s")


def run(args: argparse.Namespace) -> int:
  from zett.data import prepare_corpus

  options: PrepareOptions = load_options(PrepareOptions, args)
  summary = prepare_corpus(
    options.out,
    languages=options.languages,
    heldout_permille=options.heldout_permille,
    root=options.root,
    stdlib_dir=options.stdlib,
    progress=options.progress,
  )
  _print_summary(summary, options.out)
  sys.stdout.flush()
  return 0
