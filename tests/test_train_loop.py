"""train/ end to end on the tiny config: the heuristic start, learning under an unseen tokenizer, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests._train_helpers import TINY_CONFIG, pretrained_tiny_base, train_unseen_tokenizer
from zett.train.config import load_train_config


@pytest.fixture(scope="session")
def unseen_tokenizer(tmp_path_factory):
  return train_unseen_tokenizer(tmp_path_factory.getbasetemp() / "train-unseen-tokenizer" / "tokenizer.json")


def _config(tmp_path, *overrides):
  return load_train_config(TINY_CONFIG, [f"run_dir={tmp_path / 'run'}", "logging.progress_bar=false", *overrides])


def test_step0_predictions_equal_heuristic_and_base_bits_per_byte(tmp_path, unseen_tokenizer):
  from zett.hypernet.model import predict_jit
  from zett.train.data import heldout_texts
  from zett.train.loop import evaluate
  from zett.train.setup import prepare
  from zett.train.vocab import encoded_vocabulary, training_vocabulary
  from zett.tokenization import load_tokenizer

  config = _config(tmp_path, "eval.vocab_chunk_rows=96")  # 512 rows in 6 chunks (padded to 576)
  run = prepare(config)
  base = run.base.embeddings
  vocab = training_vocabulary(load_tokenizer(str(unseen_tokenizer)), run.base_tokenizer, 7)
  predicted = predict_jit(run.hypernet_config, run.state.params, jnp.asarray(vocab.surface_ids),
                      jnp.asarray(vocab.surface_lengths), base, jnp.asarray(vocab.special_base_ids))
  mask = np.arange(7)[None, :] < vocab.surface_lengths[:, None]
  for table, got in ((np.asarray(base.input), predicted.input), (np.asarray(base.output), predicted.output)):
    expected = (table[vocab.surface_ids] * mask[..., None]).sum(1) / vocab.surface_lengths[:, None]
    special = vocab.special_base_ids >= 0
    expected[special] = table[vocab.special_base_ids[special]]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)

  # Through the whole eval path, the base's own tokenizer at step 0 gives exactly the base model's bits per byte.
  texts = heldout_texts(config.data)[:4]
  base_set = encoded_vocabulary("base", run.base_tokenizer, run.base_tokenizer, 7)
  got = evaluate(run, run.state.params, texts, [base_set])["bpb/base"]
  rows = [ids[:config.data.sequence_length] for ids in run.base_tokenizer.encode_batch(texts)]
  ids_bt = np.zeros((len(rows), config.data.sequence_length), np.int32)
  mask_bt = np.zeros_like(ids_bt)
  for i, ids in enumerate(rows):
    ids_bt[i, :len(ids)], mask_bt[i, :len(ids)] = ids, 1
  logits = jax.jit(lambda p, x, m: run.base.module.apply({"params": p}, input_ids=x, attention_mask=m).logits)(
      run.base.params, ids_bt, mask_bt)
  nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids_bt[:, 1:])
  nll = float((nll_bt * mask_bt[:, 1:]).sum())
  num_bytes = sum(len(run.base_tokenizer.vocab_bytes[i]) for ids in rows for i in ids[1:])
  assert got == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-5)


@pytest.mark.slow
def test_training_lowers_heldout_loss_under_an_unseen_tokenizer(tmp_path, tmp_path_factory, unseen_tokenizer):
  from zett.train.loop import train
  base_dir = pretrained_tiny_base(tmp_path_factory.getbasetemp() / "train-tiny-base")
  config = _config(tmp_path, f"model.base={base_dir}", f"eval.heldout_tokenizers=[{unseen_tokenizer}]",
                   "num_train_steps=100", "eval.every_steps=100", "checkpoint.save_every_steps=100")
  summary = train(config, log=lambda _: None)
  start, end = summary["eval"][0], summary["eval"][-1]
  assert (start["step"], end["step"]) == (0, 100)
  key = f"bpb/{unseen_tokenizer}"
  assert end[key] < 0.97 * start[key], (start, end)
  assert end["bpb/sampled-0"] < start["bpb/sampled-0"], (start, end)
  assert summary["final"]["loss"] < 10 and summary["steps"] == 100


def _forbid_compilation(monkeypatch):
  import zett.train.setup as setup

  def compiled(*args, **kwargs):
    raise AssertionError("reached state creation / compilation before the input error")
  monkeypatch.setattr(setup, "create_sharded_state", compiled)
  monkeypatch.setattr(setup, "jit_train_step", compiled)


def test_unknown_config_key_fails_in_the_cli(tmp_path, capsys):
  from zett.cli import main
  assert main(["train", str(TINY_CONFIG), f"run_dir={tmp_path}", "optimizer.warmup=5"]) == 2
  assert "unknown key(s) warmup" in capsys.readouterr().err


def test_missing_data_path_fails_before_compilation(tmp_path, monkeypatch):
  from zett.train.data import DataError
  from zett.train.loop import train
  _forbid_compilation(monkeypatch)
  config = _config(tmp_path, f"data.sources=[{{path: {tmp_path / 'missing.txt'}}}]")
  with pytest.raises(DataError, match="missing.txt: no such file"):
    train(config)


def test_base_width_disagreeing_with_hypernet_checkpoint_fails_before_compilation(tmp_path, monkeypatch):
  import flax.linen as nn
  from zett.hypernet import HypernetConfig, abstract_params, save_hypernet
  from zett.train.loop import train
  from zett.train.setup import TrainSetupError
  from zett.models.family import Embeddings
  narrow = HypernetConfig(embedding_dim=32, base_vocab_size=512, num_layers=1, predict_output_embeddings=True)
  table = jax.ShapeDtypeStruct((512, 32), jnp.float32)
  shapes = nn.meta.unbox(abstract_params(narrow, Embeddings(table, table, None)))
  save_hypernet(tmp_path / "hn32", narrow, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes))
  _forbid_compilation(monkeypatch)
  config = _config(tmp_path, f"hypernet.init_checkpoint={tmp_path / 'hn32'}")
  with pytest.raises(TrainSetupError, match="width 32.*has width 64"):
    train(config)


def test_packed_encoder_and_weighted_negatives_train_end_to_end(tmp_path):
  """The CPU recipe's switches through the real loop: bucketed encoder, left-out negatives, sampled-softmax weights."""
  import math
  from zett.train.loop import train
  config = _config(tmp_path, "num_train_steps=4", "eval.every_steps=0", "checkpoint.save_every_steps=4",
                   "hypernet.encoder_buckets=[[2,96],[7,64]]", "sampler.weight_negatives=true",
                   "hypernet.aux_loss_weight=0")
  summary = train(config, log=lambda _: None)
  assert summary["steps"] == 4 and math.isfinite(summary["final"]["loss"])
  assert (tmp_path / "run" / "hypernet" / "config.json").is_file()


def test_vocab_size_conditioning_extends_an_older_checkpoint_and_trains(tmp_path):
  """`hypernet.options.condition_on_vocab_size` over an init checkpoint saved without it: every saved weight is
  loaded, the added one starts at zero, and the training step feeds it the sampled vocabulary's size."""
  from zett.hypernet import load_hypernetwork, save_hypernet
  from zett.train.loop import train
  from zett.train.setup import prepare

  plain = prepare(_config(tmp_path / "plain"))
  assert not plain.hypernet_config.condition_on_vocab_size
  rng = np.random.default_rng(0)
  saved = jax.tree.map(lambda p: np.asarray(p) + 0.01 * rng.normal(size=p.shape).astype(np.float32),
                       plain.state.params)
  save_hypernet(tmp_path / "older", plain.hypernet_config, saved)

  overrides = (f"hypernet.init_checkpoint={tmp_path / 'older'}", "hypernet.options.condition_on_vocab_size=true")
  run = prepare(_config(tmp_path / "extended", *overrides))
  assert run.hypernet_config.condition_on_vocab_size
  params = dict(run.state.params)
  assert not np.any(np.asarray(params.pop("vocab_size_embedding")))
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(b), a)

  config = _config(tmp_path / "trained", *overrides, "num_train_steps=2", "eval.every_steps=0",
                   "checkpoint.save_every_steps=2")
  train(config, log=lambda _: None)
  trained = load_hypernetwork(tmp_path / "trained" / "run" / "hypernet")
  assert trained.config.condition_on_vocab_size
  assert np.abs(np.asarray(trained.params["vocab_size_embedding"])).max() > 0
