"""Rematerialisation (`remat`): same numbers as without it, less memory, same parameter trees; wired from the config."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.hypernet.config import config_for_base
from zett.hypernet.model import Hypernet, init_hypernet
from tests._train_helpers import REPO, TINY_CONFIG, subprocess_env
from zett.train.config import load_train_config
from zett.train.step import LossSpec, loss_and_metrics
from zett.models import bert, gpt2
from zett.testing.tiny import tiny_llama

_ROWS, _LENGTH, _SEQUENCES, _TOKENS = 96, 7, 2, 192


def _batch(base_vocab: int, rng: np.random.Generator) -> dict[str, jnp.ndarray]:
  """A synthetic training batch (the layout of `train.batch.BATCH_KEYS`): random spellings, text and specials."""
  lengths = rng.integers(1, _LENGTH + 1, _ROWS).astype(np.int32)
  surface = rng.integers(0, base_vocab, (_ROWS, _LENGTH)).astype(np.int32)
  surface[np.arange(_LENGTH)[None] >= lengths[:, None]] = 0
  special = np.full(_ROWS, -1, np.int32)
  special[:3] = [0, 1, 2]
  vocab_mask = np.arange(_ROWS) < _ROWS - 8  # the last rows are static padding
  ids = rng.integers(0, _ROWS - 8, (_SEQUENCES, _TOKENS)).astype(np.int32)
  mask = np.ones((_SEQUENCES, _TOKENS), np.int32)
  mask[1, -20:] = 0
  single = (lengths == 1) & (special < 0)
  return {k: jnp.asarray(v) for k, v in dict(
      token_ids=ids, attention_mask=mask, surface_ids=surface, surface_lengths=lengths, special_base_ids=special,
      base_ids=np.where(single, surface[:, 0], -1).astype(np.int32),
      token_bytes=rng.integers(1, 6, _ROWS).astype(np.int32), vocab_mask=vocab_mask,
      logit_offsets=np.zeros(_ROWS, np.float32),
      mask_token_index=np.asarray(0, np.int32), vocab_size=np.asarray(_ROWS - 8, np.int32)).items()}


@pytest.fixture(scope="module")
def compiled_steps():
  """Loss, gradients and XLA temp bytes of the train step's value-and-grad for each (base remat, hypernet remat)."""
  base = tiny_llama(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
  hypernet_config = config_for_base(base, num_layers=2, surface_length=_LENGTH)
  params = init_hypernet(hypernet_config, base.embeddings, jax.random.key(0))
  # The heads start at zero (residual parameterisation), which would zero every body gradient; perturb all params
  # so gradients flow through every hypernetwork layer.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  batch = _batch(base.config.vocab_size, np.random.default_rng(0))
  results = {}
  for base_remat, hypernet_remat in ((False, False), (True, True), (False, True)):
    spec = LossSpec(hypernet_config, base.family, base.config, base.module.clone(remat=base_remat), causal=True,
                    remat=hypernet_remat)
    grad_fn = jax.jit(jax.value_and_grad(
        lambda p, b, bp, spec=spec: loss_and_metrics(spec, p, b, bp, jax.random.key(0)), has_aux=True))
    compiled = grad_fn.lower(params, batch, base.params).compile()
    (loss, metrics), grads = compiled(params, batch, base.params)
    results[base_remat, hypernet_remat] = dict(loss=loss, metrics=metrics, grads=grads,
                                                temp=compiled.memory_analysis().temp_size_in_bytes)
  return results


def test_loss_and_gradients_equal_without_remat(compiled_steps):
  plain, remat = compiled_steps[False, False], compiled_steps[True, True]
  assert abs(float(plain["loss"]) - float(remat["loss"])) < 1e-6
  for name in ("lm_loss", "aux_loss", "nll_sum"):
    np.testing.assert_allclose(remat["metrics"][name], plain["metrics"][name], rtol=1e-6)
  flat_plain = jax.tree_util.tree_flatten_with_path(plain["grads"])[0]
  flat_remat = jax.tree.leaves(remat["grads"])
  assert len(flat_plain) == len(flat_remat)
  for (path, g_plain), g_remat in zip(flat_plain, flat_remat):
    assert float(jnp.abs(g_plain).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    np.testing.assert_allclose(g_remat, g_plain, atol=1e-6, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_remat_lowers_xla_temp_memory(compiled_steps):
  temp = {key: r["temp"] for key, r in compiled_steps.items()}
  # Four base layers over 2 x 192 tokens: without remat every layer's attention scores and MLP hidden are kept.
  assert temp[True, True] < 0.7 * temp[False, True], temp
  # The hypernetwork's switch on its own lowers memory too (its 2 layers run over 96 rows x 7 positions).
  assert temp[False, True] < temp[False, False], temp


def _shapes(boxed):
  return jax.tree.map(lambda a: a.shape, nn.meta.unbox(boxed))


def test_param_trees_are_unchanged_by_remat():
  # Same names, shapes and logical axes: checkpoints, HF loading and the sharding rules do not see the switch.
  base = tiny_llama(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
  ids = jnp.zeros((1, 2), jnp.int32)
  trees = [jax.eval_shape(lambda m=base.module.clone(remat=r): m.init(jax.random.key(0), input_ids=ids))["params"]
           for r in (False, True)]
  assert _shapes(trees[0]) == _shapes(trees[1]) == jax.tree.map(lambda a: a.shape, base.params)
  assert nn.get_partition_spec(trees[0]) == nn.get_partition_spec(trees[1])
  hypernet_config = config_for_base(base, num_layers=2, surface_length=_LENGTH)
  surface, lengths = jnp.zeros((1, _LENGTH), jnp.int32), jnp.ones((1,), jnp.int32)
  trees = [jax.eval_shape(lambda r=r: Hypernet(hypernet_config, remat=r).init(
      jax.random.key(0), surface, lengths, base.embeddings))["params"] for r in (False, True)]
  assert _shapes(trees[0]) == _shapes(trees[1])
  assert nn.get_partition_spec(trees[0]) == nn.get_partition_spec(trees[1])


def _forward_pair(module, **inputs):
  """Logits of `module` without and with remat, on random params (filled with numpy: no init compile)."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), **inputs))["params"]
  leaves, tree = jax.tree.flatten(nn.meta.unbox(abstract))
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(tree, [jnp.asarray(rng.normal(0, 0.3, a.shape), jnp.float32) for a in leaves])
  plain = jax.jit(module.apply)({"params": params}, **inputs).logits
  rematted = jax.jit(module.clone(remat=True).apply)({"params": params}, **inputs).logits
  return np.asarray(plain), np.asarray(rematted)


def test_gpt2_forward_is_identical_with_remat():
  config = gpt2.GPT2Config(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, scale_attn_by_inverse_layer_idx=True)
  ids = np.random.default_rng(0).integers(0, 97, (2, 16)).astype(np.int32)
  mask = np.ones((2, 16), np.int32)
  mask[1, :4] = 0  # left padding
  plain, rematted = _forward_pair(gpt2.make_module(config), input_ids=ids, attention_mask=mask)
  np.testing.assert_array_equal(rematted, plain)
  assert gpt2.make_module(config, remat=True).remat


def test_bert_forward_is_identical_with_remat():
  config = bert.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1, model_type="xlm-roberta")
  ids = np.random.default_rng(1).integers(3, 101, (2, 12)).astype(np.int32)
  mask = np.ones((2, 12), np.int32)
  mask[0, -3:] = 0
  plain, rematted = _forward_pair(bert.make_module(config), input_ids=ids, attention_mask=mask)
  np.testing.assert_array_equal(rematted, plain)


def test_config_switch_reaches_the_base_and_the_hypernetwork():
  from zett.train.setup import load_base, loss_spec
  for overrides, expected in (([], False), (["remat=true"], True)):
    config = load_train_config(TINY_CONFIG, overrides)
    assert config.remat is expected
    base = load_base(config)
    spec = loss_spec(config, base, config_for_base(base, num_layers=1))
    assert base.module.remat is expected and spec.base_module.remat is expected
    assert spec.remat is expected and spec.hypernet().remat is expected


_SHARDED_SCRIPT = """
import json, sys, jax
from tests._train_helpers import TINY_CONFIG
from zett.train.config import load_train_config
from zett.train.data import TextBatcher
from zett.train.setup import batch_shardings, prepare
from zett.train.vocab import make_sampler
out = {}
for remat in ("false", "true"):
  config = load_train_config(TINY_CONFIG, [f"run_dir={sys.argv[1]}/{remat}", f"remat={remat}", "mesh.model=2",
                                           "hypernet.num_layers=2"])
  run = prepare(config)
  sampler = make_sampler(config.sampler, run.base_tokenizer, config.hypernet.surface_max_length,
                         config.data.sequence_length, 1, False, [], config.data.batch_size)
  batch = jax.device_put(sampler.sample_batch(TextBatcher(config.data).next_texts(), 0), batch_shardings(run.mesh))
  state, metrics = run.train_step(run.state, batch, run.base_params)
  state, metrics = run.train_step(state, batch, run.base_params)
  out[remat] = {"mesh": dict(run.mesh.shape), "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_train_steps_equal_with_remat(tmp_path):
  # Two real steps of `prepare`'s jitted step on a 4x2 mesh of 8 simulated devices: the hypernetwork's stacked-layer
  # scan and the base's rematerialised scan under sharded params give the same loss and gradient norm.
  done = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True,
                        text=True, timeout=600,
                        env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert done.returncode == 0, done.stderr[-4000:]
  results = json.loads(done.stdout.strip().splitlines()[-1])
  assert results["true"]["mesh"] == {"data": 4, "model": 2}
  assert abs(results["true"]["loss"] - results["false"]["loss"]) < 1e-5, results
  assert abs(results["true"]["grad_norm"] - results["false"]["grad_norm"]) < 1e-5 * results["false"]["grad_norm"]
