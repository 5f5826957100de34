"""Transfer to a new tokenizer: baselines, special tokens, export to a Hugging Face folder, bad input."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.hypernet import config_for_base, init_hypernet, save_hypernet
from tests.transfer_setup import base_tokenizer, target_tokenizer, tiny_base
from zett.transfer import (OutputExistsError, TransferError, VocabularyTooLargeError, check_output_folder, export,
                           transfer, transfer_with_record)
from zett.transfer_vocab import MissingTokenizerError

TEXT = "def parse_args(self, args=None, namespace=None):\n    return self._parse(args)  # déjà vu\n"


@pytest.fixture(scope="module")
def base():
  return tiny_base()


def _logits(model, ids):
  return np.asarray(model.module.apply({"params": model.params}, input_ids=jnp.asarray(ids)).logits)


def test_fvt_to_own_tokenizer_reproduces_the_model_exactly(base):
  own = transfer(base, base_tokenizer(), method="fvt", progress=False)
  for name in ("embed_tokens", "lm_head"):
    np.testing.assert_array_equal(np.asarray(own.params[name]), np.asarray(base.params[name]))
  ids = np.array([base_tokenizer().encode(TEXT)], np.int32)
  np.testing.assert_array_equal(_logits(own, ids), _logits(base, ids))


@pytest.mark.parametrize("method", ["fvt", "lexical", "focus", "mean", "random"])
def test_every_method_fills_the_target_vocabulary_and_keeps_special_tokens(base, method):
  target = target_tokenizer()
  model, record = transfer_with_record(base, target, method=method, batch_size=128, progress=False)
  embed = np.asarray(model.params["embed_tokens"])
  assert embed.shape == (target.vocab_size, 32) and np.isfinite(embed).all()
  assert model.config.vocab_size == target.vocab_size
  assert record.num_copied_special_tokens == 3 and record.method == method
  base_embed = np.asarray(base.params["embed_tokens"])
  base_ids = base_tokenizer().backend.get_vocab()
  for content in ("<s>", "<|endoftext|>", "<pad>"):  # special tokens keep the base's rows
    target_id = target.backend.token_to_id(content)
    np.testing.assert_array_equal(embed[target_id], base_embed[base_ids[content]])
  assert model.config.bos_token_id == target.backend.token_to_id("<s>")
  assert model.config.eos_token_id == target.backend.token_to_id("<|endoftext|>")
  # A target token that is a multi-subtoken word in the base: FVT averages its spelling.
  if method == "fvt":
    word = "Ġnamespace"
    target_id = target.backend.token_to_id(word)
    spelled = base_tokenizer().encode(" namespace")
    assert target_id is not None and len(spelled) > 1
    np.testing.assert_allclose(embed[target_id], base_embed[spelled].mean(0), rtol=1e-6, atol=1e-7)


def test_results_do_not_depend_on_batch_size(base):
  a = transfer(base, target_tokenizer(), method="random", batch_size=64, progress=False, seed=3)
  b = transfer(base, target_tokenizer(), method="random", batch_size=256, progress=False, seed=3)
  np.testing.assert_array_equal(np.asarray(a.params["lm_head"]), np.asarray(b.params["lm_head"]))


@pytest.mark.slow
def test_initialised_hypernetwork_equals_fvt(base):
  """At initialisation the residual hypernetwork predicts the subtoken mean, i.e. FVT."""
  config = config_for_base(base, hidden_size=32, num_layers=1)
  params = init_hypernet(config, base.embeddings, jax.random.key(0))
  hyper = transfer(base, target_tokenizer(), hypernet=(config, params), progress=False)
  fvt = transfer(base, target_tokenizer(), method="fvt", progress=False)
  np.testing.assert_allclose(np.asarray(hyper.params["lm_head"]), np.asarray(fvt.params["lm_head"]), atol=1e-6)


def test_export_loads_in_transformers_with_equal_logits_and_tokenization(base, tmp_path):
  torch = pytest.importorskip("torch")
  import transformers
  model, record = transfer_with_record(base, target_tokenizer(), method="fvt", progress=False)
  out = export(model, record, tmp_path / "exported")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).float().eval()
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  ids = target_tokenizer().encode(TEXT)
  assert hf_tokenizer(TEXT, add_special_tokens=False)["input_ids"] == ids
  assert hf_model.config.vocab_size == target_tokenizer().vocab_size
  assert hf_model.config.bos_token_id == target_tokenizer().backend.token_to_id("<s>")
  with torch.no_grad():
    theirs = hf_model(torch.tensor([ids])).logits.numpy()
  np.testing.assert_allclose(theirs, _logits(model, np.array([ids])), atol=1e-4, rtol=1e-4)
  card = (out / "README.md").read_text()
  assert base.name in card and "fvt" in card and target_tokenizer().name in card
  assert json.loads((out / "zett_transfer.json").read_text())["base_weights_sha256"] == base.weights_sha256


def test_export_refuses_existing_folder_unless_overwrite(base, tmp_path):
  model, record = transfer_with_record(base, target_tokenizer(), method="mean", progress=False)
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  with pytest.raises(OutputExistsError, match="exists"):
    export(model, record, out)
  assert (out / "keep.txt").read_text() == "mine"
  export(model, record, out, overwrite=True)
  assert (out / "config.json").is_file() and not (out / "keep.txt").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers


def test_failed_export_leaves_no_folder(base, tmp_path, monkeypatch):
  import zett.interop.hf as hf
  model, record = transfer_with_record(base, target_tokenizer(), method="mean", progress=False)

  def broken(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(hf, "save_pretrained", broken)
  with pytest.raises(OSError):
    export(model, record, tmp_path / "out")
  assert list(tmp_path.iterdir()) == []


def test_vocabulary_too_large_for_memory_is_refused_before_work(base):
  with pytest.raises(VocabularyTooLargeError, match="GiB"):
    transfer(base, target_tokenizer(), method="fvt", max_memory_bytes=100_000, progress=False)


def test_missing_tokenizers_are_clear_errors(base, tmp_path):
  with pytest.raises(MissingTokenizerError, match="no such file"):
    transfer(base, tmp_path / "nope.json", method="fvt", progress=False)
  import dataclasses
  with pytest.raises(MissingTokenizerError, match="no tokenizer"):
    transfer(dataclasses.replace(base, tokenizer=None), target_tokenizer(), method="fvt", progress=False)


def test_hypernetwork_for_a_different_base_is_refused(base, tmp_path):
  other = tiny_base(seed=1)
  config = config_for_base(other, hidden_size=32, num_layers=1)
  folder = save_hypernet(tmp_path / "hn", config, init_hypernet(config, other.embeddings, jax.random.key(0)))
  with pytest.raises(ValueError, match="trained for base weights"):
    transfer(base, target_tokenizer(), hypernet=folder, progress=False)
  with pytest.raises(TransferError, match="needs a hypernetwork"):
    transfer(base, target_tokenizer(), method="hypernet", progress=False)
  with pytest.raises(TransferError, match="unknown method"):
    transfer(base, target_tokenizer(), method="magic", progress=False)


def test_check_output_folder(tmp_path):
  assert check_output_folder(tmp_path / "new", overwrite=False) == tmp_path / "new"
  with pytest.raises(OutputExistsError):
    check_output_folder(tmp_path, overwrite=False)


def test_masked_lm_export_loads_in_transformers_with_equal_logits(tmp_path, method="hypernet"):
  """Encoders: output embeddings and the LM-head bias are transferred too, and the export matches PyTorch."""
  torch = pytest.importorskip("torch")
  import transformers
  from tests.transfer_setup import tiny_bert
  base = tiny_bert()
  hypernet = None
  if method == "hypernet":
    config = config_for_base(base, hidden_size=32, num_layers=1)
    assert config.predict_output_bias and config.predict_output_embeddings
    params = jax.tree_util.tree_map(lambda x: x + 0.01, init_hypernet(config, base.embeddings, jax.random.key(0)))
    hypernet = (config, params)
  model, record = transfer_with_record(base, target_tokenizer(), hypernet=hypernet, method=method, progress=False)
  bias = np.asarray(model.params["lm_head_bias"])
  assert bias.shape == (target_tokenizer().vocab_size,)
  special = target_tokenizer().backend.token_to_id("<s>")
  assert bias[special] == np.asarray(base.params["lm_head_bias"])[base_tokenizer().backend.token_to_id("<s>")]
  out = export(model, record, tmp_path / "bert")
  hf_model = transformers.AutoModelForMaskedLM.from_pretrained(str(out)).float().eval()
  ids = target_tokenizer().encode(TEXT)
  assert transformers.AutoTokenizer.from_pretrained(str(out))(TEXT, add_special_tokens=False)["input_ids"] == ids
  with torch.no_grad():
    theirs = hf_model(torch.tensor([ids])).logits.numpy()
  np.testing.assert_allclose(theirs, _logits(model, np.array([ids])), atol=1e-4, rtol=1e-4)
