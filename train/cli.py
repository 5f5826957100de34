"""`zett train CONFIG.yaml [dotted.overrides ...] [--resume]`: parse, then call `train.loop.train`."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("config", help="training config YAML (e.g. configs/tiny.yaml)")
  parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.learning_rate=1e-4 run_dir=runs/x")
  parser.add_argument("--resume", action="store_true", help="continue exactly from the latest checkpoint of run_dir")
  parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def run(args: argparse.Namespace) -> int:
  from train.config import load_train_config
  config = load_train_config(args.config, args.overrides)
  from train.loop import train  # heavy imports (jax, models) only after the config parsed cleanly
  summary = train(config, resume=args.resume)
  shown = {k: v for k, v in summary.items() if k not in ("params", "hypernet_config")}
  print(json.dumps(shown, indent=1, default=str))
  return 0
