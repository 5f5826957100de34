"""`zett data prepare`: build the training / held-out corpus from the Python stdlib and Debian's translated docs.

zett data prepare [--out data/corpus] [--languages en,de,ru,python] [--heldout-permille 20]
"""

from __future__ import annotations

import argparse
import sys

from zett.cli import int_range
from zett.data import KNOWN_LANGUAGES, prepare_corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
  prepare = sub.add_parser(
    "prepare",
    help="build the corpus: one parquet file per language, plus summary.json",
    description="Build the training / held-out corpus offline: Python standard-library "
    "code and Debian's translated documentation, man pages and fortunes.",
  )
  prepare.add_argument("--out", default="data/corpus", help="output folder (default: data/corpus, git-ignored)")
  prepare.add_argument(
    "--languages",
    default="all",
    help=f"comma-separated codes, 'python' for the stdlib code (default: all: {','.join(KNOWN_LANGUAGES)})",
  )
  prepare.add_argument(
    "--heldout-permille",
    type=int_range(0, 999),
    default=20,
    help="documents held out per 1000 (train.data.is_heldout); give training the same "
    "data.heldout_permille (default: 20)",
  )
  prepare.add_argument(
    "--root", default="/", help="file system root holding the Debian packages and their dpkg database (default: /)"
  )
  prepare.add_argument("--stdlib", default=None, help="Python standard-library folder (default: this Python's)")
  prepare.add_argument("--no-progress", action="store_true", help="no progress bars")
  prepare.add_argument("--debug", action="store_true", help="show tracebacks")


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
  summary = prepare_corpus(
    args.out,
    languages=args.languages,
    heldout_permille=args.heldout_permille,
    root=args.root,
    stdlib_dir=args.stdlib,
    progress=not args.no_progress,
  )
  _print_summary(summary, args.out)
  sys.stdout.flush()
  return 0
