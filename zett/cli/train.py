"""`zett train CONFIG.yaml [dotted.overrides ...] [--resume] [--dry-run]`: parse, then call `train.loop.train`.

Multi-process runs (TPU pods, GPU clusters; see tpu/README.md) pass --coordinator/--num-processes/--process-id (or the
JAX_* environment variables, or --distributed-auto on a TPU pod / SLURM); `train.distributed` joins them first.
"""

from __future__ import annotations

import argparse
import json

from zett.cli import float_range, int_range


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("config", help="training config YAML (e.g. configs/tiny.yaml)")
  parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.learning_rate=1e-4 run_dir=runs/x")
  parser.add_argument("--resume", action="store_true", help="continue exactly from the latest checkpoint of run_dir")
  parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
  group = parser.add_argument_group("multi-process (train.distributed)")
  group.add_argument("--coordinator", help="HOST:PORT of process 0 (default: $JAX_COORDINATOR_ADDRESS)")
  group.add_argument(
    "--num-processes", type=int_range(1, 1 << 16), help="processes in the run (default: $JAX_NUM_PROCESSES)"
  )
  group.add_argument(
    "--process-id", type=int_range(0, (1 << 16) - 1), help="this process, 0-based (default: $JAX_PROCESS_ID)"
  )
  group.add_argument(
    "--distributed-timeout", type=int_range(1, 7 * 86400), help="seconds to wait for the coordinator (default 300)"
  )
  group.add_argument(
    "--distributed-auto", action="store_true", help="let jax detect the cluster (TPU pod slice, SLURM, Open MPI)"
  )
  dry = parser.add_argument_group("memory estimate (train.memory)")
  dry.add_argument(
    "--dry-run",
    action="store_true",
    help="print the per-device memory estimate for the config's mesh and exit (nothing is allocated)",
  )
  dry.add_argument("--target", help="hardware preset for --dry-run: " + ", ".join(_target_names()))
  dry.add_argument(
    "--devices", type=int_range(1, 1 << 20), help="device count for --dry-run (default: the target's, or this host's)"
  )
  dry.add_argument(
    "--device-memory-gib",
    type=float_range(0, 1 << 20, low_open=True),
    help="memory per device for --dry-run (default: the target's)",
  )


def _target_names() -> list[str]:
  from zett.train.memory import TARGETS

  return list(TARGETS)


def run(args: argparse.Namespace) -> int:
  from zett.train.config import load_train_config

  config = load_train_config(args.config, args.overrides)
  if args.dry_run:
    from zett.train.memory import dry_run

    print(dry_run(config, target=args.target, devices=args.devices, device_memory_gib=args.device_memory_gib))
    return 0
  from zett.train import distributed

  distributed.initialize(
    distributed.options_from(
      args.coordinator, args.num_processes, args.process_id, args.distributed_timeout, args.distributed_auto
    )
  )
  from zett.train.loop import train  # heavy imports (jax, models) only after the config parsed cleanly

  summary = train(config, resume=args.resume)
  import jax

  if jax.process_index() == 0:
    shown = {k: v for k, v in summary.items() if k not in ("params", "hypernet_config")}
    print(json.dumps(shown, indent=1, default=str))
  return 0
