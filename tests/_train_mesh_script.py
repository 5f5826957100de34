"""Run in a subprocess with 8 simulated CPU devices (see test_train_mesh.py); prints one JSON line."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tests._train_helpers import TINY_CONFIG  # noqa: E402
from zett.train import mesh as mesh_lib  # noqa: E402
from zett.train.config import MeshConfig, load_train_config  # noqa: E402
from zett.train.data import TextBatcher  # noqa: E402
from zett.train.setup import base_logical_axes, prepare  # noqa: E402
from zett.train.vocab import make_sampler  # noqa: E402


def losses_on(run_dir, mesh_overrides, devices, batches):
  config = load_train_config(TINY_CONFIG, [f"run_dir={run_dir}", *mesh_overrides])
  run = prepare(config, devices=devices)
  state, losses = run.state, []
  for batch in batches:
    state, metrics = run.train_step(state, batch, run.base_params)
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), run


def full_size_offenders(mesh, min_size):
  """Unsharded parameters of the SmolLM2-135M-sized base and its hypernetwork, from abstract shapes only."""
  from zett.hypernet import HypernetConfig, abstract_params
  from zett.models import llama
  from zett.models.family import Embeddings
  from zett.testing.tiny import tiny_llama_config
  base_config = tiny_llama_config(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                  num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True)
  base_abstract = jax.eval_shape(lambda: llama.LlamaModule(base_config).init(
      jax.random.key(0), input_ids=jnp.zeros((1, 2), jnp.int32)))["params"]
  table = jax.ShapeDtypeStruct((49152, 576), jnp.float32)
  hypernet_abstract = abstract_params(HypernetConfig(embedding_dim=576, base_vocab_size=49152),
                                      Embeddings(table, None, None))
  report = {}
  for group, boxed in (("base", base_abstract), ("hypernet", hypernet_abstract)):
    shapes = nn.meta.unbox(boxed)
    shardings = mesh_lib.param_shardings(nn.get_partition_spec(boxed), shapes, mesh, mesh_lib.RULES)
    report[group] = mesh_lib.unsharded_offenders(shardings, shapes, min_size)
    if group == "base":
      report["embed_tokens_spec"] = list(shardings["embed_tokens"].spec)
  return report


def main(tmp):
  assert len(jax.devices()) == 8, jax.devices()
  config = load_train_config(TINY_CONFIG, [f"run_dir={tmp}/data"])
  from zett.testing.tiny import tiny_tokenizer
  batcher = TextBatcher(config.data)
  sampler = make_sampler(config.sampler, tiny_tokenizer(), config.hypernet.surface_max_length,
                         config.data.sequence_length, 4, False, [], config.data.batch_size)
  batches = [sampler.sample_batch(batcher.next_texts(), step) for step in range(4)]
  single, single_params, _ = losses_on(f"{tmp}/one", ["mesh.data=1", "mesh.model=1"], jax.devices()[:1], batches)
  sharded, sharded_params, run = losses_on(f"{tmp}/eight", ["mesh.data=4", "mesh.model=2"], None, batches)
  param_diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(single_params),
                                                               jax.tree.leaves(sharded_params)))
  tiny_offenders = mesh_lib.unsharded_offenders(run.state_shardings.params, run.state.params, 4096)
  tiny_offenders += mesh_lib.unsharded_offenders(
      mesh_lib.param_shardings(base_logical_axes(run.base), run.base.params,
                               run.mesh, mesh_lib.RULES), run.base.params, 4096)
  print(json.dumps({"single": single, "sharded": sharded, "param_diff": param_diff,
                    "mesh": dict(run.mesh.shape), "tiny_offenders": tiny_offenders,
                    "full_size": full_size_offenders(run.mesh, 2 ** 16), "report": run.report}))


if __name__ == "__main__":
  main(sys.argv[1])
