"""`train.publish`: a leg's exported hypernetwork becomes the shipped bf16 copy plus its record, legs accumulating."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import yaml
from safetensors.numpy import load_file

from zett.hypernet import HypernetConfig, abstract_params, save_hypernet
from zett.sha256 import file_sha256
from zett.train.publish import publish
from zett.models.family import Embeddings


def _leg(run_dir, seed: int, evals: dict[int, float], last_step: int):
  """A run folder as a SIGTERM-stopped `zett train` leaves it: hypernet/ and metrics.jsonl."""
  config = HypernetConfig(embedding_dim=32, base_vocab_size=64, num_layers=1, predict_output_embeddings=True)
  table = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  shapes = nn.meta.unbox(abstract_params(config, Embeddings(table, table, None)))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
  save_hypernet(run_dir / "hypernet", config, params)
  records = [{"kind": "eval", "step": step, "bpb/base:tiny": 1.0, "bpb/some/dir/mistral.model": bpb}
             for step, bpb in evals.items()]
  records += [{"kind": "train", "step": step, "loss": 1.0} for step in range(20, last_step + 1, 20)]
  (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  return params


def test_two_legs_accumulate_tokens_curve_and_a_verified_bf16_copy(tmp_path):
  config_path = tmp_path / "recipe.yaml"
  config_path.write_text(yaml.safe_dump({"data": {"batch_size": 2, "sequence_length": 8}}))
  repo = tmp_path / "repo"
  _leg(tmp_path / "leg1", 0, {0: 3.0, 100: 2.5}, last_step=100)
  publish(tmp_path / "leg1", config_path, "tiny", "fresh", None, None, 60.0, tokens=1000, repo=repo)
  # The second leg was stopped and resumed: its first evaluation is at step 60, yet it started at step 0.
  params = _leg(tmp_path / "leg2", 1, {60: 2.2, 120: 2.0}, last_step=120)
  manifest = publish(tmp_path / "leg2", config_path, "tiny", "from leg 1", None, None, 90.0, tokens=2400,
                     overrides=["data.seed=2"], repo=repo)

  assert [(leg["steps"], leg["tokens"], leg["note"]) for leg in manifest["legs"]] == [
      (100, 1000, "fresh"), (120, 2400, "from leg 1")]
  assert manifest["tokens_seen"] == 3400
  assert manifest["legs"][1]["overrides"] == ["data.seed=2"]
  curve = [json.loads(line) for line in (repo / "checkpoints_manifest" / "tiny.curve.jsonl").read_text().splitlines()]
  # Leg 2 ran 20 tokens a step (2400 / 120) and began where leg 1's 1000 tokens ended.
  assert [(p["leg"], p["tokens_seen"], p["heldout_bpb"]["mistral.model"]) for p in curve] == [
      (1, 0, 3.0), (1, 1000, 2.5), (2, 1000 + 60 * 20, 2.2), (2, 1000 + 120 * 20, 2.0)]
  assert (repo / "checkpoints_manifest" / "tiny.curve.png").stat().st_size > 0

  shipped = repo / "zett" / "hypernets" / "tiny" / "hypernet.safetensors"
  assert manifest["hypernet_sha256"] == file_sha256(shipped)
  tensors = load_file(shipped)
  assert {str(t.dtype) for t in tensors.values()} == {"bfloat16"}
  flat = jax.tree_util.tree_leaves(params)
  assert sum(t.size for t in tensors.values()) == sum(a.size for a in flat)
