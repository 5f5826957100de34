"""`zett train CONFIG.yaml [KEY=VALUE ...] [--resume] [--dry-run]`: parse, then call `zett.train.loop.train`.

The YAML file and the dotted overrides are the run's `TrainConfig` (`zett.train.config`); the flags are how this
process runs it (`TrainRunOptions`). Multi-process runs (TPU pods, GPU clusters; see tpu/README.md) pass
--coordinator/--num-processes/--process-id (or the JAX_* environment variables, or --distributed-auto on a TPU pod /
SLURM); `zett.train.distributed` joins them first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from zett import config as config_lib
from zett.cli._options import add_options, flag_values, option, split_arguments
from zett.config import check_ranges
from zett.errors import UsageError


@dataclasses.dataclass(frozen=True)
class TrainRunOptions:
  """How this process runs the training config: resume, join a multi-process run, or only estimate memory."""

  resume: bool = False
  """Continue exactly from the latest checkpoint of run_dir."""
  coordinator: str | None = None
  """Multi-process: HOST:PORT of process 0 (default: $JAX_COORDINATOR_ADDRESS)."""
  num_processes: int | None = option(low=1, high=1 << 16)
  """Multi-process: processes in the run (default: $JAX_NUM_PROCESSES)."""
  process_id: int | None = option(low=0, high=(1 << 16) - 1)
  """Multi-process: this process, 0-based (default: $JAX_PROCESS_ID)."""
  distributed_timeout: int | None = option(low=1, high=7 * 86400)
  """Multi-process: seconds to wait for the coordinator (default 300)."""
  distributed_auto: bool = False
  """Multi-process: let jax detect the cluster (TPU pod slice, SLURM, Open MPI)."""
  dry_run: bool = False
  """Print the per-device memory estimate for the config's mesh and exit (nothing is allocated)."""
  target: str | None = None
  """Hardware preset for dry_run (zett.train.memory.TARGETS: v4-8, v4-32, v5p-64, 8xh100-80gb, ...)."""
  devices: int | None = option(low=1, high=1 << 20)
  """Device count for dry_run (default: the target's, or this host's)."""
  device_memory_gib: float | None = option(low=0, high=1 << 20, low_open=True)
  """Memory per device for dry_run (default: the target's)."""

  def __post_init__(self):
    check_ranges(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from zett.train.config import TrainConfig

  add_options(
    parser,
    TrainRunOptions,
    config_help="the training config YAML (the same as CONFIG.yaml)",
    arguments=(
      "CONFIG.yaml|KEY=VALUE",
      "the training config (e.g. configs/tiny.yaml), then KEY=VALUEs that override its keys (listed below; dotted "
      "keys reach nested sections, the value is YAML: 3, true, [a, b], null)",
    ),
    keys_of=TrainConfig,
  )


def run(args: argparse.Namespace) -> int:
  from zett.train.config import load_train_config

  overrides, files = split_arguments(args.arguments)
  if args.config is not None:
    files = [args.config, *files]
  if len(files) != 1:
    given = f"got {', '.join(files)}" if files else "none given"
    raise UsageError(f"give one training config: zett train CONFIG.yaml [KEY=VALUE ...] ({given})")
  run_options = config_lib.load(TrainRunOptions, values=flag_values(TrainRunOptions, args))
  config = load_train_config(files[0], [*args.set, *overrides])
  if run_options.dry_run:
    from zett.train.memory import dry_run

    print(
      dry_run(
        config,
        target=run_options.target,
        devices=run_options.devices,
        device_memory_gib=run_options.device_memory_gib,
      )
    )
    return 0
  from zett.train import distributed

  distributed.initialize(
    distributed.options_from(
      run_options.coordinator,
      run_options.num_processes,
      run_options.process_id,
      run_options.distributed_timeout,
      run_options.distributed_auto,
    )
  )
  from zett.train.loop import train  # heavy imports (jax, models) only after the config parsed cleanly

  summary = train(config, resume=run_options.resume)
  import jax

  if jax.process_index() == 0:
    shown = {k: v for k, v in summary.items() if k not in ("params", "hypernet_config")}
    print(json.dumps(shown, indent=1, default=str))
  return 0
