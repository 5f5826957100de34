"""Where metrics go: a JSONL file (always), TensorBoard (when a writer package is installed), and a tqdm bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _tensorboard_writer(log_dir: Path):
  import importlib.util

  for module, needs in (("tensorboardX", "tensorboardX"), ("torch.utils.tensorboard", "tensorboard")):
    # Checked first: importing torch only to find tensorboard missing costs seconds at every start-up.
    if importlib.util.find_spec(needs) is None:
      continue
    try:
      writer_cls = __import__(module, fromlist=["SummaryWriter"]).SummaryWriter
      return writer_cls(str(log_dir))
    except Exception:  # not installed, or torch without the tensorboard package
      continue
  return None


class MetricsWriter:
  """Appends one JSON object per record; mirrors scalars to TensorBoard if available. Only process 0 writes."""

  def __init__(self, path: Path, tensorboard: bool, enabled: bool = True):
    self.path = Path(path)
    self.enabled = enabled
    self._tensorboard = None
    if enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      if tensorboard:
        self._tensorboard = _tensorboard_writer(self.path.parent / "tensorboard")

  def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"kind": kind, "step": step, "time": time.time(), **values}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tensorboard is not None:
      for name, value in values.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._tensorboard.add_scalar(f"{kind}/{name}", value, step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
  """Records of a metrics JSONL file (optionally of one kind: "train" or "eval")."""
  records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
  return [r for r in records if kind is None or r["kind"] == kind]


class Progress:
  """tqdm bar over micro-steps with loss, tokens/s; tqdm itself shows the ETA."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self._bar = None
    if enabled:
      from tqdm.auto import tqdm

      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)

  def update(self, n: int = 1, **postfix) -> None:
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False)
      self._bar.update(n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
