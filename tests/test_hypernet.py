"""Hypernetwork module and its safetensors checkpoints."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax import global_norm as optax_global_norm

from zett import hypernet

import zett.hypernet.model
from zett.hypernet import (HypernetCheckpointError, HypernetConfig, init_hypernet, load_hypernetwork, predict,
                           save_hypernet)
from zett.models.family import Embeddings
from zett.testing.files import flip_byte


def _base(rng, vocab=50, dim=32, untied=False, bias=False):
  k1, k2, k3 = jax.random.split(rng, 3)
  return Embeddings(
      jax.random.normal(k1, (vocab, dim)),
      jax.random.normal(k2, (vocab, dim)) * 3.0 if untied else None,
      jax.random.normal(k3, (vocab,)) if bias else None)


def _surface(rng, n=12, length=4, vocab=50):
  ids = jax.random.randint(rng, (n, length), 0, vocab)
  lengths = jnp.array([1 + i % length for i in range(n)], jnp.int32)
  return ids, lengths


@pytest.mark.parametrize("untied,bias", [(False, False), (True, False), (True, True)])
def test_initial_prediction_is_mean_of_subtokens(untied, bias):
  base = _base(jax.random.key(0), untied=untied, bias=bias)
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=2, surface_length=4,
                          predict_output_embeddings=untied, predict_output_bias=bias)
  params = init_hypernet(config, base, jax.random.key(1))
  ids, lengths = _surface(jax.random.key(2))
  pred = predict(config, params, ids, lengths, base)
  mask = (np.arange(4)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
  def mean(table):
    rows = np.asarray(table)[np.asarray(ids)]
    return (rows * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  np.testing.assert_allclose(pred.input, mean(base.input), atol=1e-5)
  if untied:
    np.testing.assert_allclose(pred.output, mean(base.output), atol=1e-5)
  else:
    assert pred.output is None
  if bias:
    np.testing.assert_allclose(pred.bias, mean(base.bias[:, None])[:, 0], atol=1e-5)


def test_special_tokens_keep_base_rows_and_training_moves_predictions():
  base = _base(jax.random.key(0), untied=True)
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4,
                          predict_output_embeddings=True)
  params = init_hypernet(config, base, jax.random.key(1))
  ids, lengths = _surface(jax.random.key(2))
  special = jnp.full((12,), -1, jnp.int32).at[3].set(7)
  target = jnp.ones((12, 32))

  def loss(p):
    return jnp.mean((predict(config, p, ids, lengths, base, special).input - target) ** 2)

  grads = jax.grad(loss)(params)
  params2 = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
  pred = predict(config, params2, ids, lengths, base, special)
  np.testing.assert_allclose(pred.input[3], base.input[7], atol=1e-6)
  np.testing.assert_allclose(pred.output[3], base.output[7], atol=1e-6)
  assert loss(params2) < loss(params)


def test_padding_rows_stay_finite():
  base = _base(jax.random.key(0))
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4)
  params = init_hypernet(config, base, jax.random.key(1))
  ids = jnp.zeros((3, 4), jnp.int32)
  pred = predict(config, params, ids, jnp.array([0, 0, 2], jnp.int32), base)
  assert np.isfinite(np.asarray(pred.input)).all()


def test_save_load_round_trip_and_errors(tmp_path):
  base = _base(jax.random.key(0), untied=True, bias=True)
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4,
                          predict_output_embeddings=True, predict_output_bias=True,
                          base_weights_sha256="ab" * 32)
  params = init_hypernet(config, base, jax.random.key(1))
  params = jax.tree.map(lambda p: p + 0.01, params)
  out = save_hypernet(tmp_path / "hn", config, params)
  loaded = load_hypernetwork(out)
  config2, params2 = loaded.config, loaded.params
  assert config2 == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)

  other = SimpleNamespace(embeddings=base, name="other", weights_sha256="cd" * 32)
  with pytest.raises(HypernetCheckpointError, match="trained for base weights abababababab…, but other has cdcd"):
    load_hypernetwork(out, other)

  flip_byte(out / "hypernet.safetensors", -5)
  with pytest.raises(HypernetCheckpointError, match="sha256"):
    load_hypernetwork(out)

  # A config that disagrees with the stored weights' shapes.
  save_hypernet(tmp_path / "hn2", config, params)
  record = json.loads((tmp_path / "hn2" / "config.json").read_text())
  record["hypernet"]["embedding_dim"] = 16
  (tmp_path / "hn2" / "config.json").write_text(json.dumps(record))
  with pytest.raises(HypernetCheckpointError, match="shape"):
    load_hypernetwork(tmp_path / "hn2")

  with pytest.raises(HypernetCheckpointError, match="does not exist"):
    load_hypernetwork(tmp_path / "missing")


def test_bfloat16_export_loads(tmp_path):
  base = _base(jax.random.key(0))
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4)
  params = init_hypernet(config, base, jax.random.key(1))
  out = save_hypernet(tmp_path / "hn", config, params, dtype=jnp.bfloat16)
  params2 = load_hypernetwork(out).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-2, rtol=1e-2),
               params, params2)


def _trained_like(params, seed=3, scale=0.1):
  """Perturbs every parameter (zero-initialised heads included) so the encoder's output matters."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + scale * jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


@pytest.mark.parametrize("keep,untied,bias", [(True, False, False), (False, True, True), (True, True, False)])
def test_bucketed_encoder_equals_padded_path(keep, untied, bias):
  base = _base(jax.random.key(0), untied=untied, bias=bias)
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, hidden_size=64, num_layers=2, surface_length=7,
                          predict_output_embeddings=untied, predict_output_bias=bias, keep_base_tokens=keep)
  params = _trained_like(init_hypernet(config, base, jax.random.key(1)))
  rng = np.random.default_rng(0)
  lengths = rng.integers(0, 8, 64).astype(np.int32)
  ids = rng.integers(0, 50, (64, 7)).astype(np.int32)
  buckets = ((2, 20), (3, 12), (7, 40))
  assert not any(hypernet.model.bucket_overflow(config, lengths, buckets))
  padded = predict(config, params, ids, lengths, base)
  bucketed = predict(config, params, ids, lengths, base, buckets=buckets)
  real = lengths > 0  # padding rows (length 0) are never read
  for a, b in zip(padded, bucketed):
    if a is not None:
      np.testing.assert_allclose(np.asarray(b)[real], np.asarray(a)[real], atol=1e-5)
  # Gradients agree too (the training step differentiates the bucketed path).
  def loss(p, b=None):
    return jnp.sum(predict(config, p, ids, lengths, base, buckets=b).input[real] ** 2)
  g_padded, g_bucketed = jax.grad(loss)(params), jax.grad(lambda p: loss(p, buckets))(params)
  for a, b in zip(jax.tree.leaves(g_padded), jax.tree.leaves(g_bucketed)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_bucket_specs_and_overflow_are_checked():
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, surface_length=7)
  for bad in [((3, 10),), ((7, 10), (3, 10)), ((3, 0), (7, 1)), ()]:
    with pytest.raises(ValueError, match="buckets"):
      hypernet.model.check_buckets(config, bad)
  lengths = np.array([1, 2, 2, 3, 5, 7, 0])
  assert hypernet.model.bucket_overflow(config, lengths, ((2, 1), (7, 5))) == [1, 0]
  config_all = HypernetConfig(embedding_dim=32, base_vocab_size=50, surface_length=7, keep_base_tokens=False)
  assert hypernet.model.bucket_overflow(config_all, lengths, ((2, 1), (7, 5))) == [2, 0]


def test_keep_base_tokens_copies_single_subtoken_rows_after_training():
  base = _base(jax.random.key(0))
  ids, lengths = _surface(jax.random.key(2))
  target = jnp.ones((12, 32))
  for keep in (True, False):
    config = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4,
                            keep_base_tokens=keep)
    params = _trained_like(init_hypernet(config, base, jax.random.key(1)))
    pred = predict(config, params, ids, lengths, base)
    single = np.asarray(lengths) == 1
    copied = np.allclose(np.asarray(pred.input)[single], np.asarray(base.input)[np.asarray(ids)[single, 0]],
                         atol=1e-6)
    assert copied == keep
    grads = jax.grad(lambda p: jnp.mean((predict(config, p, ids, lengths, base).input - target) ** 2))(params)
    assert float(optax_global_norm(grads)) > 0  # the other rows still train


def test_vocab_size_conditioning_starts_neutral_and_then_sees_the_size(tmp_path):
  base = _base(jax.random.key(0))
  ids, lengths = _surface(jax.random.key(2))
  plain = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4)
  conditioned = HypernetConfig(embedding_dim=32, base_vocab_size=50, num_layers=1, surface_length=4,
                               condition_on_vocab_size=True)
  old = _trained_like(init_hypernet(plain, base, jax.random.key(1)))
  fresh = init_hypernet(conditioned, base, jax.random.key(1))
  assert set(fresh) - set(old) == {"vocab_size_embedding"}
  assert not np.any(np.asarray(fresh["vocab_size_embedding"]))
  extended = {**old, "vocab_size_embedding": fresh["vocab_size_embedding"]}
  reference = predict(plain, old, ids, lengths, base).input
  for size in (None, 8192, 151_851):  # zero-initialised: an older hypernetwork's predictions, whatever the size
    np.testing.assert_allclose(predict(conditioned, extended, ids, lengths, base, vocab_size=size).input, reference,
                               atol=1e-6)

  trained = {**old, "vocab_size_embedding": jnp.linspace(-1.0, 1.0, 32)}
  small, large, unset, reference_size = (
    np.asarray(predict(conditioned, trained, ids, lengths, base, vocab_size=size).input)
    for size in (8192, 151_851, None, 32768))
  predicted = np.asarray(lengths) > 1
  assert (np.abs(small - large)[predicted].max(-1) > 1e-4).all()  # every predicted row sees the size
  np.testing.assert_array_equal(small[~predicted], large[~predicted])  # copied base rows do not depend on it
  np.testing.assert_allclose(unset, reference_size, atol=1e-6)  # None stands for the reference size
  # Traced sizes (the training step's) give the same predictions as Python ints.
  traced = jax.jit(lambda v: predict(conditioned, trained, ids, lengths, base, vocab_size=v).input)
  np.testing.assert_allclose(traced(jnp.asarray(151_851, jnp.int32)), large, atol=1e-5)

  save_hypernet(tmp_path / "hn", conditioned, trained)
  loaded = load_hypernetwork(tmp_path / "hn")
  assert loaded.config.condition_on_vocab_size
  np.testing.assert_allclose(predict(loaded.config, loaded.params, ids, lengths, base, vocab_size=8192).input, small,
                             atol=1e-6)
