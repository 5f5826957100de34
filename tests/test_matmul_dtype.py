"""bfloat16 products under float32 compute (`matmul_dtype`, the training switch `base_matmul_dtype`): the products
round their inputs and nothing else, forward and backward, in every family; training steps use them, evaluation not."""

import dataclasses
import json
import platform

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests._train_helpers import TINY_CONFIG
from zett.models import bert, gpt2
from zett.models._layers import low_precision_einsum
from zett.testing.tiny import tiny_llama
from zett.train.config import load_train_config

_SPECS = {  # every product `_layers.dense` is called with, with operand shapes
  "btd,df->btf": ((2, 5, 16), (16, 24)),
  "btd,dhe->bthe": ((2, 5, 16), (16, 4, 8)),
  "bthe,hed->btd": ((2, 5, 4, 8), (4, 8, 16)),
}


def _rounded(x):
  return x.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("spec", list(_SPECS))
def test_products_round_their_inputs_and_cotangents_only(spec):
  x_shape, k_shape = _SPECS[spec]
  rng = np.random.default_rng(0)
  x, kernel = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x_shape, k_shape))
  out_shape = jax.eval_shape(lambda a, b: jnp.einsum(spec, a, b), x, kernel).shape
  cotangent = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
  hi = jax.lax.Precision.HIGHEST

  def low(a, b):
    return jnp.vdot(low_precision_einsum(spec, a, b, jnp.dtype(jnp.bfloat16)), cotangent)

  def exact(a, b):
    return jnp.vdot(jnp.einsum(spec, a, b, precision=hi), cotangent)

  out = low_precision_einsum(spec, x, kernel, jnp.dtype(jnp.bfloat16))
  assert out.dtype == jnp.float32
  # Forward: exactly the float32 product of the rounded inputs (up to summation order).
  np.testing.assert_allclose(out, jnp.einsum(spec, _rounded(x), _rounded(kernel), precision=hi), rtol=1e-5, atol=1e-5)
  # Backward: the float32 products of the rounded cotangent with the rounded other operand.
  dx, dk = jax.grad(low, argnums=(0, 1))(x, kernel)
  x_spec, rest = spec.split(",")
  k_spec, o_spec = rest.split("->")
  np.testing.assert_allclose(dx, jnp.einsum(f"{o_spec},{k_spec}->{x_spec}", _rounded(cotangent), _rounded(kernel),
                                            precision=hi), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, jnp.einsum(f"{x_spec},{o_spec}->{k_spec}", _rounded(x), _rounded(cotangent),
                                            precision=hi), rtol=1e-5, atol=1e-5)
  # ... which is close to the float32 gradient, and not equal to it: the rounding happened.
  dx_exact, dk_exact = jax.grad(exact, argnums=(0, 1))(x, kernel)
  for got, want in ((dx, dx_exact), (dk, dk_exact)):
    scale = float(jnp.abs(want).max())
    assert 0 < float(jnp.abs(got - want).max()) < 0.03 * scale


def _logits(module, params, **inputs):
  return np.asarray(jax.jit(module.apply)({"params": params}, **inputs).logits)


def _random_params(module, **inputs):
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), **inputs))["params"]
  leaves, tree = jax.tree.flatten(nn.meta.unbox(abstract))
  rng = np.random.default_rng(0)
  return jax.tree.unflatten(tree, [jnp.asarray(rng.normal(0, 0.2, a.shape), jnp.float32) for a in leaves])


def _families():
  llama = tiny_llama(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
  gpt2_config = gpt2.GPT2Config(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)
  bert_config = bert.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                                model_type="xlm-roberta")
  return {"llama": llama.module, "gpt2": gpt2.make_module(gpt2_config), "bert": bert.make_module(bert_config)}


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_every_family_takes_the_switch(family):
  module = _families()[family]
  ids = np.random.default_rng(1).integers(3, 97, (2, 12)).astype(np.int32)
  inputs = dict(input_ids=ids, attention_mask=np.ones((2, 12), np.int32))
  params = _random_params(module, **inputs)
  fast = module.clone(matmul_dtype=jnp.bfloat16)
  # Same parameter tree: checkpoints and exports do not see the switch.
  assert jax.tree.map(jnp.shape, _random_params(fast, **inputs)) == jax.tree.map(jnp.shape, params)
  plain, rounded = _logits(module, params, **inputs), _logits(fast, params, **inputs)
  assert rounded.dtype == np.float32
  difference = np.abs(rounded - plain).max()
  assert 0 < difference < 0.05 * np.abs(plain).max(), difference


def test_training_steps_use_it_and_evaluation_does_not(tmp_path):
  from zett.hypernet.config import config_for_base
  from zett.train.setup import load_base, loss_spec, train_loss_spec

  config = load_train_config(TINY_CONFIG, [f"run_dir={tmp_path}", "base_matmul_dtype=bfloat16"])
  base = load_base(config)
  spec = loss_spec(config, base, config_for_base(base, num_layers=1))
  assert spec.base_module.matmul_dtype is None  # evaluation
  assert train_loss_spec(config, spec).base_module.matmul_dtype == jnp.bfloat16
  plain = load_train_config(TINY_CONFIG, [f"run_dir={tmp_path}"])
  assert train_loss_spec(plain, spec) is spec


def test_auto_picks_bfloat16_products_only_where_the_cpu_has_amx(tmp_path, monkeypatch):
  import zett.train.setup as setup

  config = load_train_config(TINY_CONFIG, [f"run_dir={tmp_path}", "base_matmul_dtype=auto"])
  monkeypatch.setattr(setup.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(setup, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})  # Ice Lake: slow bfloat16 products
  assert setup.base_matmul_dtype(config) is None
  monkeypatch.setattr(setup, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})  # Sapphire Rapids
  assert setup.base_matmul_dtype(config) == "bfloat16"
  monkeypatch.setattr(setup, "cpu_flags", set)
  monkeypatch.setattr(setup.jax, "default_backend", lambda: "gpu")
  assert setup.base_matmul_dtype(config) == "bfloat16"
  for fixed in ("float32", "bfloat16"):  # set explicitly, the machine does not matter
    assert setup.base_matmul_dtype(dataclasses.replace(config, base_matmul_dtype=fixed)) == fixed
  monkeypatch.undo()
  if platform.system() == "Linux" and platform.machine() == "x86_64":  # the real reader finds this machine's flags
    assert "sse2" in setup.cpu_flags()


def test_a_run_resumes_with_the_switch_flipped(tmp_path):
  # base_matmul_dtype may change between legs of one run (like remat); the resumed steps train on, with losses close
  # to the float32 run's on the same batches.
  from zett.train.loop import train

  common = [f"run_dir={tmp_path / 'run'}", "num_train_steps=6", "eval.every_steps=0", "logging.every_steps=1",
            "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.save_every_steps=3"]
  straight = [f"run_dir={tmp_path / 'straight'}", *common[1:]]
  train(load_train_config(TINY_CONFIG, straight), log=lambda _: None)
  train(load_train_config(TINY_CONFIG, [*common[:1], "num_train_steps=3", *common[2:]]), log=lambda _: None)
  summary = train(load_train_config(TINY_CONFIG, [*common, "base_matmul_dtype=bfloat16"]), resume=True,
                  log=lambda _: None)
  assert summary["start_step"] == 3 and summary["steps"] == 6

  def losses(folder):
    records = [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}

  want, got = losses("straight"), losses("run")
  for step in (4, 5, 6):
    assert got[step] != want[step] and abs(got[step] - want[step]) < 0.02 * abs(want[step]), (step, got, want)
