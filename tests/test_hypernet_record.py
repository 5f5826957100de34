"""The `Hypernetwork` record, its loader and base check, and `embed_vocabulary`."""

import json
import re
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from zett.hypernet import (HypernetCheckpointError, HypernetConfig, Hypernetwork, check_fits_base, embed_vocabulary,
                           init_hypernet, load_hypernetwork, predict, save_hypernet)
from zett.hypernet.vocabulary import chunk_rows
from zett.models.family import Embeddings
from zett.testing.files import flip_byte

SHA = "ab" * 32


def _embeddings(vocab=50, dim=32, untied=False, bias=False, seed=0):
  rng = np.random.default_rng(seed)
  return Embeddings(rng.normal(size=(vocab, dim)).astype(np.float32),
                    rng.normal(size=(vocab, dim)).astype(np.float32) * 3 if untied else None,
                    rng.normal(size=(vocab,)).astype(np.float32) if bias else None)


def _base(embeddings, name="tiny", weights_sha256=SHA):
  """What the loader reads of a `zett.models.base.BaseModel`."""
  return SimpleNamespace(embeddings=embeddings, name=name, weights_sha256=weights_sha256)


def _hypernetwork(untied=False, bias=False, keep=True, surface_length=4, seed=1):
  """A tiny config with every parameter perturbed (zero-initialised heads included), so the encoder matters."""
  config = HypernetConfig(embedding_dim=32, base_vocab_size=50, hidden_size=64, num_layers=1,
                          surface_length=surface_length, predict_output_embeddings=untied, predict_output_bias=bias,
                          keep_base_tokens=keep, base_weights_sha256=SHA)
  params = init_hypernet(config, _embeddings(untied=untied, bias=bias), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return Hypernetwork(config, jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32), params))


def test_loader_records_and_verifies_the_weights(tmp_path):
  made = _hypernetwork()
  folder = save_hypernet(tmp_path / "hn", made.config, made.params)
  loaded = load_hypernetwork(folder, _base(_embeddings()))
  assert loaded.config == made.config and loaded.source == str(folder)
  assert loaded.sha256 == json.loads((folder / "config.json").read_text())["weights_sha256"]
  assert load_hypernetwork(loaded) is loaded  # a loaded one passes through (and is checked when a base is given)
  in_memory = load_hypernetwork((made.config, made.params), _base(_embeddings()))
  assert (in_memory.sha256, in_memory.source, in_memory.where) == (None, None, "hypernetwork")

  flip_byte(folder / "hypernet.safetensors", -5)
  with pytest.raises(HypernetCheckpointError, match="sha256 does not match config.json"):
    load_hypernetwork(folder)


@pytest.mark.parametrize("base,message", [
    (_base(_embeddings(), weights_sha256="cd" * 32), "trained for base weights abababababab…, but tiny has cdcd"),
    (_base(_embeddings(dim=16)), "embedding_dim is 32, but tiny has 16-wide embeddings"),
    (_base(_embeddings(vocab=51)), "base_vocab_size is 50, but tiny has 51 embedding rows"),
    (_base(_embeddings(untied=True)), "predict_output_embeddings=False means a tied base, but tiny is untied"),
    (_base(_embeddings(bias=True)), "predicts no LM-head bias, but tiny has one"),
])
def test_a_hypernetwork_for_another_base_is_refused_naming_what_differs(tmp_path, base, message):
  made = _hypernetwork()
  folder = save_hypernet(tmp_path / "hn", made.config, made.params)
  with pytest.raises(HypernetCheckpointError, match=f"{re.escape(str(folder))}: {message}"):
    load_hypernetwork(folder, base)
  with pytest.raises(HypernetCheckpointError, match=f"hypernetwork: {message}"):
    check_fits_base(made, base)
  check_fits_base(made, _base(_embeddings(), weights_sha256=""))  # a base without a recorded sha256: shapes only


@pytest.mark.parametrize("keep,untied,bias", [(True, False, False), (False, True, True), (True, True, False)])
@pytest.mark.parametrize("chunk_size", [8, 4096])
def test_embed_vocabulary_equals_one_padded_prediction(keep, untied, bias, chunk_size):
  """The chunked, length-sorted path gives what one full-length call over every row gives (the path the ANN build,
  the service and dynamic tokenization took before they shared `embed_vocabulary`)."""
  hypernetwork = _hypernetwork(untied=untied, bias=bias, keep=keep)
  base = _embeddings(untied=untied, bias=bias)
  rng = np.random.default_rng(2)
  lengths = rng.integers(1, 5, 37).astype(np.int32)
  ids = np.where(np.arange(4)[None, :] < lengths[:, None], rng.integers(0, 50, (37, 4)), 0).astype(np.int32)
  special = np.full((37,), -1, np.int32)
  special[[3, 20]] = [7, 9]
  expected = predict(hypernetwork.config, hypernetwork.params, ids, lengths, base, special)
  got = embed_vocabulary(hypernetwork, base, ids, lengths, special, chunk_size=chunk_size)
  on_device = embed_vocabulary(hypernetwork, base, ids, lengths, special, chunk_size=chunk_size, on_device=True)
  for want, host, device in zip(expected, got, on_device):
    assert (want is None) == (host is None) == (device is None)
    if want is not None:
      assert isinstance(host, np.ndarray) and host.dtype == np.float32
      np.testing.assert_allclose(host, np.asarray(want), rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(np.asarray(device), host)


def test_embed_vocabulary_of_nothing_keeps_the_shapes():
  hypernetwork = _hypernetwork(untied=True)
  out = embed_vocabulary(hypernetwork, _embeddings(untied=True), np.zeros((0, 4), np.int32), np.zeros((0,), np.int32))
  assert out.input.shape == out.output.shape == (0, 32) and out.bias is None


def test_chunk_rows_are_the_chunk_size_or_a_power_of_two():
  assert [chunk_rows(n, 4096) for n in (0, 5, 16, 17, 1000, 4096, 10_000)] == [16, 16, 16, 32, 1024, 4096, 4096]
  assert (chunk_rows(1000, 1000), chunk_rows(10, 10), chunk_rows(5000, 8192)) == (1000, 10, 8192)
