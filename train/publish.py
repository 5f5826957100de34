"""Ship a trained hypernetwork: bf16 weights inside the package, and its record in `checkpoints_manifest/`.

    python -m zett.train.publish --run-dir RUN --config configs/smollm2-135m-cpu.yaml --name smollm2-135m \
        --leg-note "..." [--eval-json table.json] [--corpus-summary data/corpus/summary.json]

Reads RUN/hypernet (what a finished or SIGTERM-stopped `zett train` exports) and RUN/metrics.jsonl, writes
`zett/hypernets/NAME/` (config.json + bf16 hypernet.safetensors), and `checkpoints_manifest/NAME.json` with every leg
(the earlier legs kept), the training curve (`NAME.curve.jsonl`, `NAME.curve.png`: held-out bits per byte against
tokens seen, all legs) and the evaluation table. The pinned sha256 in `zett.assets.SHIPPED_HYPERNETS` must then be set
to the printed value (a test checks that code, manifest and file agree).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def leg_curve(metrics: list[dict], leg: int, tokens_before: float, tokens_per_step: float) -> list[dict]:
  """Held-out evaluations of one leg as curve points; tokens seen = tokens before this leg + steps x tokens/step.

  A leg is one run folder, from its step 0 (fresh or from earlier weights) to its last step, however many times it
  was stopped and resumed; its first evaluation need not be at step 0.
  """
  points = []
  for record in metrics:
    if record["kind"] != "eval":
      continue
    bpb = {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("bpb/")}
    points.append(
      {
        "leg": leg,
        "step": record["step"],
        "tokens_seen": round(tokens_before + record["step"] * tokens_per_step),
        "heldout_bpb": {_short_name(k): round(v, 5) for k, v in bpb.items()},
      }
    )
  return points


def _short_name(tokenizer: str) -> str:
  """Evaluation labels are tokenizer specs (paths); the curve keeps their file name."""
  return tokenizer if tokenizer.startswith(("base:", "sampled-")) else Path(tokenizer).name


def plot_curve(points: list[dict], out: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  names = sorted({name for p in points for name in p["heldout_bpb"]})
  for name in names:
    xs = [p["tokens_seen"] / 1e6 for p in points if name in p["heldout_bpb"]]
    ys = [p["heldout_bpb"][name] for p in points if name in p["heldout_bpb"]]
    ax.plot(xs, ys, marker="o", label=name)
  ax.set_xlabel("training tokens seen (millions)")
  ax.set_ylabel("held-out bits per byte")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def publish(
  run_dir: Path,
  config_path: Path,
  name: str,
  leg_note: str,
  eval_json: Path | None,
  corpus_summary: Path | None,
  wall_seconds: float | None,
  tokens: int | None = None,
  overrides: list[str] | None = None,
  repo: Path = REPO,
) -> dict:
  import jax.numpy as jnp
  import yaml

  from zett.hypernet.config import HypernetConfig
  from zett.hypernet.io import save_hypernet
  from zett.hypernet.record import load_hypernetwork
  from zett.sha256 import file_sha256

  exported = load_hypernetwork(run_dir / "hypernet")
  config, params = exported.config, exported.params
  assert isinstance(config, HypernetConfig)  # a training run saves zett's own format, never the published one
  target = repo / "zett" / "hypernets" / name
  save_hypernet(target, config, params, dtype=jnp.bfloat16)
  weights_sha = file_sha256(target / "hypernet.safetensors")

  manifest_dir = repo / "checkpoints_manifest"
  manifest_dir.mkdir(parents=True, exist_ok=True)
  manifest_path = manifest_dir / f"{name}.json"
  manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"legs": []}
  curve_path = manifest_dir / f"{name}.curve.jsonl"
  old_points = _read_jsonl(curve_path) if curve_path.exists() else []

  metrics = _read_jsonl(run_dir / "metrics.jsonl")
  train_records = [m for m in metrics if m["kind"] == "train"]
  evals = [m for m in metrics if m["kind"] == "eval"]
  run_config = yaml.safe_load(config_path.read_text())
  first_step = 0
  last_step = max((m["step"] for m in train_records + evals), default=0)
  steps = last_step
  tokens_per_step = (
    (tokens / max(steps, 1)) if tokens else run_config["data"]["batch_size"] * run_config["data"]["sequence_length"]
  )
  tokens_before = sum(leg["tokens"] for leg in manifest["legs"])
  leg_index = len(manifest["legs"]) + 1
  points = leg_curve(metrics, leg_index, tokens_before, tokens_per_step)
  manifest["legs"].append(
    {
      "leg": leg_index,
      "first_step": first_step,
      "last_step": last_step,
      "steps": steps,
      "tokens": int(tokens) if tokens else steps * tokens_per_step,
      "tokens_note": "text tokens under the sampled tokenizers (the run's summary)"
      if tokens
      else "sequence slots (batch x length); packed text fills nearly every slot",
      "overrides": list(overrides or []),
      "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores (shared with other work)",
      "wall_time_seconds": wall_seconds,
      "note": leg_note,
    }
  )
  all_points = old_points + points
  curve_path.write_text("".join(json.dumps(p) + "\n" for p in all_points))
  plot_curve(all_points, manifest_dir / f"{name}.curve.png", f"{name} hypernetwork: held-out bits per byte")

  manifest.update(
    {
      "name": name,
      "base_model": config.base_model,
      "base_weights_sha256": config.base_weights_sha256,
      "base_tokenizer": config.base_tokenizer,
      "hypernet_sha256": weights_sha,
      "location": f"zett/hypernets/{name}",
      "hypernet_config": json.loads((target / "config.json").read_text())["hypernet"],
      "config": run_config,
      "tokens_seen": sum(leg["tokens"] for leg in manifest["legs"]),
      "curve": {"jsonl": curve_path.name, "png": f"{name}.curve.png"},
    }
  )
  if corpus_summary is not None:
    manifest["data"] = json.loads(corpus_summary.read_text())
  if eval_json is not None:
    manifest["metrics"] = json.loads(eval_json.read_text())
  manifest_path.write_text(json.dumps(manifest, indent=1, default=_plain) + "\n")
  return manifest


def _plain(value):
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"not JSON serialisable: {type(value)}")


def main(argv=None) -> int:
  assert __doc__ is not None
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run-dir", required=True, type=Path)
  parser.add_argument("--config", required=True, type=Path, help="the YAML the leg ran with")
  parser.add_argument("--name", default="smollm2-135m")
  parser.add_argument("--leg-note", required=True, help="how the leg started (fresh / resumed / from weights) and why")
  parser.add_argument("--eval-json", type=Path, help="bench/transfer_quality.py --json output")
  parser.add_argument("--corpus-summary", type=Path, help="summary.json of `zett data prepare`")
  parser.add_argument("--wall-seconds", type=float, help="wall time of the leg")
  parser.add_argument("--tokens", type=int, help='text tokens the leg trained on (its summary\'s "tokens")')
  parser.add_argument("--overrides", nargs="*", default=[], help="the dotted overrides the leg ran with")
  args = parser.parse_args(argv)
  manifest = publish(
    args.run_dir,
    args.config,
    args.name,
    args.leg_note,
    args.eval_json,
    args.corpus_summary,
    args.wall_seconds,
    args.tokens,
    args.overrides,
  )
  print(
    f"shipped zett/hypernets/{args.name}: sha256 {manifest['hypernet_sha256']} "
    f"({manifest['tokens_seen']:,} tokens over {len(manifest['legs'])} leg(s)); set it in "
    "zett.assets.SHIPPED_HYPERNETS"
  )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
