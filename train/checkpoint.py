"""Training checkpoints: one orbax `CheckpointManager` with named items.

Items per step: "state" (the trainable `TrainState`: hypernetwork params, optimiser state, step, RNG), "data" (JSON:
text position and tokenizer-sampler state) and "config" (JSON: the resolved run config). The frozen base is never
written here; it reloads from its own files. Saves happen every N updates, every M minutes (rolling: the oldest beyond
`max_to_keep` go, except multiples of `keep_every_steps`) and when SIGTERM arrives (the loop polls
`StopOnSignal.requested` between steps, so a save never interleaves with a step). The clock is injectable for tests.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from train.config import CheckpointConfig


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be resumed from."""


class Checkpointer:
  """Thin policy layer over one orbax CheckpointManager."""

  def __init__(self, directory: str | Path, config: CheckpointConfig, micro_steps_per_update: int = 1,
               clock=time.monotonic):
    self.directory = Path(directory).absolute()
    self.config = config
    self._micro = micro_steps_per_update
    self._clock = clock
    self._last_save_time = clock()
    keep_period = config.keep_every_steps * micro_steps_per_update or None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.max_to_keep, keep_period=keep_period, create=True,
        enable_async_checkpointing=config.async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, micro_step: int) -> bool:
    """Every `save_every_steps` updates, or when `save_every_minutes` passed (at update boundaries only)."""
    if micro_step % self._micro:
      return False
    if (micro_step // self._micro) % self.config.save_every_steps == 0:
      return True
    minutes = self.config.save_every_minutes
    return bool(minutes) and self._clock() - self._last_save_time >= 60 * minutes

  def save(self, step: int, state, data_state: dict[str, Any], config_dict: dict[str, Any]) -> None:
    """Saves all items for `step` (skipped if that step is already on disk)."""
    if step in self._manager.all_steps():
      return
    self._last_save_time = self._clock()
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), config=ocp.args.JsonSave(config_dict)))

  def restore(self, abstract_state, shardings, step: int | None = None):
    """(state placed with `shardings`, data_state, config_dict) of `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
    return restored["state"], restored["data"], restored["config"]

  def read_config(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class StopOnSignal:
  """Context manager: SIGTERM sets `requested` instead of killing the process (main thread only)."""

  def __init__(self, enabled: bool = True, signals=(signal.SIGTERM,)):
    self.requested = False
    self._enabled = enabled and threading.current_thread() is threading.main_thread()
    self._signals = signals
    self._previous = {}

  def _handle(self, signum, frame):
    self.requested = True

  def __enter__(self):
    if self._enabled:
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
