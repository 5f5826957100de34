"""Training checkpoints: one orbax `CheckpointManager` with named items.

Items per step: "state" (the trainable `TrainState`: hypernetwork params, optimiser state, step, RNG), "data" (JSON:
text position and tokenizer-sampler state) and "config" (JSON: the resolved run config). The frozen base is never
written here; it reloads from its own files. Saves happen every N updates, every M minutes (rolling: the oldest beyond
`max_to_keep` go, except multiples of `keep_every_steps`) and when SIGTERM arrives (the loop polls
`StopOnSignal.requested` between steps, so a save never interleaves with a step). The clock is injectable for tests.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from zett.errors import ZettError
from zett.train.config import CheckpointConfig


class CheckpointError(ZettError, ValueError):
  """A checkpoint directory that cannot be resumed from."""


SKIPPED_PREFIX = "skipped-"  # checkpoints that failed to restore are moved aside under this name (orbax ignores it)


def _reason(error: Exception) -> str:
  """One line about why a checkpoint did not restore (tensorstore errors name the file)."""
  text = " ".join(str(error).split()) or "no message"
  text = re.sub(r'(Error opening "\w+" driver: )+', "", text)  # tensorstore's chain of driver layers
  text = re.sub(r" \[tensorstore_spec.*", "", text)
  return f"{type(error).__name__}: {text[:500]}"


class Checkpointer:
  """Thin policy layer over one orbax CheckpointManager."""

  def __init__(
    self, directory: str | Path, config: CheckpointConfig, micro_steps_per_update: int = 1, clock=time.monotonic
  ):
    self.directory = Path(directory).absolute()
    self.config = config
    self._micro = micro_steps_per_update
    self._clock = clock
    self._last_save_time = clock()
    keep_period = config.keep_every_steps * micro_steps_per_update or None
    options = ocp.CheckpointManagerOptions(
      max_to_keep=config.max_to_keep, keep_period=keep_period, create=True, enable_async_checkpointing=config.async_save
    )
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
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), config=ocp.args.JsonSave(config_dict)
      ),
    )

  def all_steps_newest_first(self) -> list[int]:
    return sorted(self._manager.all_steps(), reverse=True)

  def newest_readable_config(self, log=print) -> tuple[int, dict[str, Any]]:
    """(step, saved config) of the newest checkpoint whose config item reads; raises CheckpointError if none."""
    problems = []
    for step in self.all_steps_newest_first():
      try:
        return step, self.read_config(step)
      except Exception as error:  # orbax and tensorstore raise many types for damaged files
        problems.append(f"step {step} ({_reason(error)})")
        log(f"--resume: skipping checkpoint {self.directory / str(step)}: {_reason(error)}")
    raise CheckpointError(f"--resume: no intact checkpoint in {self.directory}: " + ("; ".join(problems) or "none"))

  def restore_newest_intact(self, abstract_state, shardings, log=print):
    """(step, state, data_state, config) of the newest checkpoint that restores whole.

    Checkpoints that fail (a truncated array file, broken metadata, an empty manifest) are named in `log` with the
    reason and moved aside to `skipped-STEP-...` in the same directory, so the resumed run can save those steps anew.
    Raises CheckpointError, listing every reason, when none restores.
    """
    problems, damaged = [], []
    for step in self.all_steps_newest_first():
      try:
        self._read_every_array_file(step)
        state, data, config = self.restore(abstract_state, shardings, step)
      except Exception as error:  # orbax and tensorstore raise many types for damaged files
        problems.append(f"step {step} ({_reason(error)})")
        damaged.append(step)
        log(f"--resume: skipping damaged checkpoint {self.directory / str(step)}: {_reason(error)}")
        continue
      for bad in damaged:
        self._set_aside(bad)
      if damaged:
        self._manager.reload()
        log(f"--resume: resuming from step {step}; damaged checkpoints moved to {self.directory}/{SKIPPED_PREFIX}*")
      return step, state, data, config
    raise CheckpointError(f"--resume: no intact checkpoint in {self.directory}: " + "; ".join(problems))

  def _read_every_array_file(self, step: int) -> None:
    """Reads every stored array value of `step` once, synchronously.

    A damaged OCDBT file (empty manifest, truncated data file) then fails here with tensorstore's message naming the
    file. Left to orbax's parallel restore, the failure strands the other reads, whose callbacks print a traceback
    each into a closed event loop.
    """
    import tensorstore as ts

    folder = self.directory / str(step) / "state"
    if not (folder / "manifest.ocdbt").is_file():  # not an OCDBT checkpoint: orbax checks it alone
      return
    store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{folder}"}).result()
    for key in store.list().result():
      store.read(key).result()

  def _set_aside(self, step: int) -> None:
    folder = self.directory / str(step)
    if jax.process_index() == 0 and folder.is_dir():  # one process renames on a shared file system
      try:
        os.rename(folder, self.directory / f"{SKIPPED_PREFIX}{step}-{int(time.time())}")
      except OSError:
        pass

  def restore(self, abstract_state, shardings, step: int | None = None):
    """(state placed with `shardings`, data_state, config_dict) of `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()
      ),
    )
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
