"""Multi-process (multi-host) training: `jax.distributed` start-up, per-process data shards, host-side agreement.

One process runs per host (TPU VM worker, GPU node, or simulated on one machine). Each process:

- joins the run through `initialize(options)` (flags, `JAX_*` environment variables, or cluster auto-detection on TPU
  pods and SLURM); a coordinator that cannot be reached gives a `DistributedError` after a bounded wait instead of
  jax's process abort;
- reads only its own logical data shards (`ShardedTextBatcher`: shard s of S is `datasets`' `split_dataset_by_node`
  rank s; process p owns shards [p*S/P, (p+1)*S/P));
- exchanges its texts with the others (one small all-gather of UTF-8 bytes per step) so that every process samples the
  *same* tokenizer from the same global batch, deterministically (same seed, same text), and takes its slice;
- feeds its addressable devices from that global batch with `jax.make_array_from_process_local_data`.

Why logical shards rather than one shard per process: with `data.shards` fixed, the global batch of step n does not
depend on how many processes read it, so a run resumes on another process count and a 2-process run reproduces a
1-process run exactly (tests/test_distributed.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zett.errors import ZettError
from zett.train.config import DataConfig


class DistributedError(ZettError, ValueError):
  """Bad multi-process settings, or a coordinator that could not be reached in time."""


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
  """How this process joins a multi-process run (all None/False: a single process)."""

  coordinator_address: str | None = None
  """host:port of process 0's coordinator service."""
  num_processes: int | None = None
  process_id: int | None = None
  timeout_s: int = 300
  """How long to wait for the coordinator / the other processes before giving up."""
  auto: bool = False
  """Let jax detect the cluster (TPU pod slices, SLURM, Open MPI): no address/count/id needed."""

  @property
  def enabled(self) -> bool:
    return self.auto or self.coordinator_address is not None or (self.num_processes or 1) > 1


_ENV = {
  "coordinator_address": "JAX_COORDINATOR_ADDRESS",
  "num_processes": "JAX_NUM_PROCESSES",
  "process_id": "JAX_PROCESS_ID",
}


def options_from(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  timeout_s: int | None = None,
  auto: bool = False,
  environ: Mapping[str, str] = os.environ,
) -> DistributedOptions:
  """Options from explicit values (CLI flags), falling back to `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
  `JAX_PROCESS_ID` / `ZETT_DISTRIBUTED_TIMEOUT` in `environ`."""
  values = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  for field, var in _ENV.items():
    if values[field] is None and environ.get(var):
      raw = environ[var]
      if field == "coordinator_address":
        values[field] = raw
      else:
        try:
          values[field] = int(raw)
        except ValueError:
          raise DistributedError(f"{var}={raw!r} is not an integer") from None
  if timeout_s is None:
    timeout_s = int(environ.get("ZETT_DISTRIBUTED_TIMEOUT", "300"))
  return DistributedOptions(timeout_s=timeout_s, auto=auto, **values)


def _split_address(address: str) -> tuple[str, int]:
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise DistributedError(f"coordinator address {address!r} must be HOST:PORT (e.g. 10.0.0.2:8476)")
  return host.strip("[]"), int(port)


def validate(options: DistributedOptions) -> None:
  """Raises DistributedError for incomplete or inconsistent explicit settings."""
  if options.auto:
    return
  address, count, index = options.coordinator_address, options.num_processes, options.process_id
  if address is None or count is None or index is None:
    missing = [
      name for name in ("coordinator_address", "num_processes", "process_id") if getattr(options, name) is None
    ]
    raise DistributedError(
      f"multi-process run needs {', '.join(missing)} (flags --coordinator/--num-processes/"
      "--process-id or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID), or --auto "
      "on a TPU pod / SLURM"
    )
  if count < 1 or not 0 <= index < count:
    raise DistributedError(f"process_id={index} must be in [0, num_processes={count})")
  if options.timeout_s < 1:
    raise DistributedError(f"distributed timeout must be >= 1 s, got {options.timeout_s}")
  _split_address(address)


def wait_for_coordinator(address: str, timeout_s: float, poll_s: float = 0.25) -> None:
  """Returns once a TCP connection to `address` succeeds; DistributedError after `timeout_s`.

  jax's own client aborts the whole process (SIGABRT, uncatchable) when registration times out, so the
  non-coordinator processes probe first and fail with a message instead.
  """
  host, port = _split_address(address)
  deadline = time.monotonic() + timeout_s
  last_error: Exception | None = None
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
        return
    except OSError as e:
      last_error = e
    if time.monotonic() >= deadline:
      raise DistributedError(
        f"coordinator {address} not reachable after {timeout_s:g} s ({last_error}); start "
        "process 0 first, check the address/port and the firewall"
      )
    time.sleep(poll_s)


def _check_bindable(address: str) -> None:
  _, port = _split_address(address)
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(("", port))
    except OSError as e:
      raise DistributedError(f"process 0 cannot open the coordinator port {port} ({e}); pick a free port") from None


def initialize(options: DistributedOptions) -> bool:
  """Joins the multi-process run described by `options` (no-op for a single process). Returns True if it joined.

  Must run before anything touches a jax device.
  """
  if not options.enabled:
    return False
  validate(options)
  import jax

  # Cross-process collectives on the CPU backend (tests, CPU clusters); GPU/TPU use their own (NCCL, ICI).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if options.auto:
    jax.distributed.initialize(initialization_timeout=options.timeout_s)
    return True
  address = options.coordinator_address
  assert address is not None  # validate() checked it
  if options.process_id == 0:
    _check_bindable(address)
  else:
    wait_for_coordinator(address, options.timeout_s)
  jax.distributed.initialize(
    options.coordinator_address, options.num_processes, options.process_id, initialization_timeout=options.timeout_s
  )
  return True


# ------------------------------------------------------------------------------------------------ host exchange


def allgather_objects(value: Any) -> list[Any]:
  """Every process's JSON-serialisable `value`, in process order (a collective: all processes must call it)."""
  import jax

  if jax.process_count() == 1:
    return [value]
  from jax.experimental import multihost_utils

  payload = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.asarray([payload.size], np.int64))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[: payload.size] = payload
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(row[:n]).decode("utf-8")) for row, n in zip(gathered, lengths)]


def agree_any(*flags: bool) -> tuple[bool, ...]:
  """Per flag: True if it is True on any process (so every process takes the same branch, e.g. save or stop)."""
  import jax

  if jax.process_count() == 1:
    return tuple(bool(f) for f in flags)
  from jax.experimental import multihost_utils

  gathered = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
  # numpy types any(axis=...) as "a scalar or an array"; over axis 0 of this 2-d array it is a 1-d array.
  return tuple(bool(v) for v in gathered.reshape(-1, len(flags)).any(axis=0))  # pyright: ignore[reportGeneralTypeIssues]


def to_host(tree):
  """A pytree of (possibly multi-process sharded) arrays as full numpy arrays on every process (a collective)."""
  import jax

  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def global_device_batch(batch: Mapping[str, np.ndarray], shardings: Mapping[str, Any]) -> dict[str, Any]:
  """Global jax arrays from a batch every process holds in full; each process fills only its addressable devices."""
  import jax

  return {
    key: jax.make_array_from_process_local_data(shardings[key], np.asarray(value), np.shape(value))
    for key, value in batch.items()
  }


# ------------------------------------------------------------------------------------------------ data shards


def num_shards(config: DataConfig, process_count: int) -> int:
  """Logical data shards of a run (`data.shards`, default one per process), checked against the process count."""
  shards = getattr(config, "shards", 0) or process_count
  if shards % process_count:
    raise DistributedError(f"data.shards={shards} must be a multiple of the process count ({process_count})")
  if config.batch_size % shards:
    raise DistributedError(f"data.batch_size={config.batch_size} must be divisible by data.shards={shards}")
  return shards


class ShardedTextBatcher:
  """The global batch's texts, read shard by shard: this process reads only its own shards, then all exchange.

  Same interface as `train.data.TextBatcher` (`next_texts`, `get_state`, `set_state`), but texts and state are
  *global*: `next_texts()` returns all `data.batch_size` rows in shard order on every process, and the state holds
  every shard's position (gathered), so process 0 writes it into the checkpoint and any process count reads it back.
  """

  def __init__(self, config: DataConfig, process_index: int = 0, process_count: int = 1):
    from zett.train.data import TextBatcher

    self.shards = num_shards(config, process_count)
    per_process = self.shards // process_count
    self.own_shards = list(range(process_index * per_process, (process_index + 1) * per_process))
    # One TextBatcher per owned shard: it reads `split_dataset_by_node(rank=shard, world_size=shards)` and draws
    # its source mix from (seed, step, shard), so a shard's rows do not depend on which process reads it.
    self._readers = {s: TextBatcher(config, s, self.shards) for s in self.own_shards}

  def next_texts(self) -> list[str]:
    local = [text for s in self.own_shards for text in self._readers[s].next_texts()]
    return [text for part in allgather_objects(local) for text in part]

  def get_state(self) -> dict[str, Any]:
    local = {str(s): self._readers[s].get_state() for s in self.own_shards}
    merged: dict[str, Any] = {}
    for part in allgather_objects(local):
      merged.update(part)
    return {"shards": merged}

  def set_state(self, state: dict[str, Any]) -> None:
    shards = state.get("shards")
    if shards is None and self.shards == 1:  # a checkpoint of a plain single-process TextBatcher
      shards = {"0": state}
    if shards is None or len(shards) != self.shards:
      found = "no shard list" if shards is None else f"{len(shards)} shard(s)"
      raise DistributedError(
        f"checkpoint data state has {found}, the run reads {self.shards} "
        "(keep data.shards fixed to resume on another process count)"
      )
    for s in self.own_shards:
      self._readers[s].set_state(shards[str(s)])


def describe_processes() -> str:
  import jax

  return (
    f"processes: {jax.process_count()} (this is {jax.process_index()}), devices: {jax.device_count()} "
    f"({jax.local_device_count()} local)"
  )


def heldout_for_all(config: DataConfig) -> Sequence[str]:
  """Held-out text, the same on every process (read in full: it is small, and evaluation batches are global)."""
  from zett.train.data import heldout_texts

  return heldout_texts(config, 0, 1)
