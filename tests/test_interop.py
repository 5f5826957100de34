"""Hugging Face interop: export that transformers loads with equal logits, sharding, tokenizer files, bad input."""

import json
import os

import jax
import numpy as np
import pytest

from zett.interop import hf
from zett.interop._safetensors import SafetensorsFile, write_safetensors
from zett.models import ModelLoadError
from zett.models.load import load_model
from zett.testing import tiny_llama
from zett.tokenization import Tokenizer
from zett.testing.torch_reference import LLAMA_VARIANTS, padded_batch, random_hf_causal_lm, torch_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _reload_torch(folder):
  return transformers.AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").float().eval()


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_hf_to_ours_to_hf_round_trip_keeps_logits(variant, tmp_path):
  reference = random_hf_causal_lm(variant, seed=1)
  reference.save_pretrained(str(tmp_path / "in"))
  model = hf.load_pretrained(tmp_path / "in")
  hf.save_pretrained(model, tmp_path / "out")
  reloaded = _reload_torch(tmp_path / "out")
  assert type(reloaded) is type(reference)
  ids, mask, positions = padded_batch(model.config.vocab_size, seed=1)
  real = mask.astype(bool)
  expected = torch_logits(reference, ids, mask, positions)
  got = torch_logits(reloaded, ids, mask, positions)
  assert np.abs(got[real] - expected[real]).max() < 1e-6


@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers_with_our_logits(tied, tmp_path):
  model = tiny_llama(vocab_size=96, hidden_size=32, tie_word_embeddings=tied, seed=3)
  out = hf.save_pretrained(model, tmp_path / "export")
  assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
  ids, mask, positions = padded_batch(96, seed=2)
  ours = np.asarray(jax.jit(model.module.apply)({"params": model.params}, input_ids=ids, attention_mask=mask).logits)
  theirs = torch_logits(_reload_torch(out), ids, mask, positions)
  real = mask.astype(bool)
  assert np.abs(ours[real] - theirs[real]).max() < 1e-4


def test_sharded_save_and_load_round_trip(tmp_path):
  model = tiny_llama(vocab_size=64, hidden_size=32, seed=4)
  out = hf.save_pretrained(model, tmp_path / "sharded", max_shard_bytes=20_000)
  index = json.loads((out / hf.INDEX_FILE).read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and not (out / hf.SINGLE_FILE).exists()
  loaded = load_model(str(out))
  same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), model.params, loaded.params)
  assert all(jax.tree_util.tree_leaves(same))
  assert loaded.weights_sha256 != model.weights_sha256 and len(loaded.weights_sha256) == 64
  _reload_torch(out)  # transformers reads the index too


def test_bfloat16_params_export_and_reload(tmp_path):
  import jax.numpy as jnp
  from zett.models.base import cast_params
  model = tiny_llama(vocab_size=64, hidden_size=32)
  bf16 = cast_params(model.params, jnp.bfloat16)
  out = hf.save_pretrained(type(model)(**{**model.__dict__, "params": bf16}), tmp_path / "bf16")
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  assert SafetensorsFile(out / hf.SINGLE_FILE)["model.norm.weight"].dtype == jnp.bfloat16
  loaded = hf.load_pretrained(out, param_dtype=jnp.bfloat16)
  assert loaded.params["embed_tokens"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(loaded.params["embed_tokens"], np.float32),
                                np.asarray(bf16["embed_tokens"], np.float32))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16)
  np.testing.assert_array_equal(reloaded.model.embed_tokens.weight.detach().float().numpy(),
                                np.asarray(bf16["embed_tokens"], np.float32))


def _tiny_tokenizer(model="WordPiece"):
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate("the cat sat on a mat".split())}}
  backend = Tokenizer(getattr(models, model)(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                              eos_token="</s>")


def test_export_writes_tokenizer_and_card_and_replaces_atomically(tmp_path):
  model = tiny_llama(vocab_size=64, hidden_size=32)
  out = tmp_path / "export"
  out.mkdir()
  (out / "stale.txt").write_text("from an older export")
  hf.save_pretrained(model, out, tokenizer=_tiny_tokenizer())
  assert not (out / "stale.txt").exists() and "AutoModelForCausalLM" in (out / "README.md").read_text()
  reloaded = transformers.AutoTokenizer.from_pretrained(str(out))
  assert reloaded("the cat sat")["input_ids"] == _tiny_tokenizer()("the cat sat")["input_ids"]
  loaded = hf.load_pretrained(out).tokenizer  # a zett Tokenizer from load time on, with the roles transformers names
  assert isinstance(loaded, Tokenizer) and loaded.name == "export"
  assert loaded.encode("the cat sat") == _tiny_tokenizer()("the cat sat")["input_ids"]
  assert {role: loaded.id_to_piece[i] for role, i in loaded.roles.items()} == {"unk": "<unk>", "bos": "<s>",
                                                                               "eos": "</s>"}

  class BrokenTokenizer:
    def save_pretrained(self, folder):
      raise OSError("disk full")
  with pytest.raises(OSError, match="disk full"):
    hf.save_pretrained(model, tmp_path / "never", tokenizer=BrokenTokenizer())
  assert sorted(os.listdir(tmp_path)) == ["export"]  # no half-written folder, no temp left behind


def test_a_tokenizer_zett_cannot_read_fails_the_load(tmp_path):
  out = hf.save_pretrained(tiny_llama(vocab_size=64, hidden_size=32), tmp_path / "m",
                           tokenizer=_tiny_tokenizer("WordLevel"))
  with pytest.raises(ModelLoadError, match=r"m: tokenizer files present but unusable: .*'WordLevel'"):
    hf.load_pretrained(out)
  assert hf.load_pretrained(out, load_tokenizer=False).tokenizer is None


@pytest.fixture()
def saved_folder(tmp_path):
  return hf.save_pretrained(tiny_llama(vocab_size=64, hidden_size=32), tmp_path / "model")


def _rewrite_tensors(folder, edit):
  path = folder / hf.SINGLE_FILE
  tensors = {k: np.array(v) for k, v in SafetensorsFile(path).items()}
  edit(tensors)
  write_safetensors(path, tensors)


def test_folder_without_config(tmp_path):
  with pytest.raises(ModelLoadError, match=r"config\.json.*missing"):
    load_model(str(tmp_path))


def test_unknown_model_type(saved_folder):
  config = json.loads((saved_folder / "config.json").read_text())
  (saved_folder / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
  with pytest.raises(ModelLoadError, match=r"config\.json.*unknown model_type 'mamba'"):
    hf.load_pretrained(saved_folder)


def test_missing_tensor(saved_folder):
  _rewrite_tensors(saved_folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ModelLoadError, match=r"model\.safetensors.*missing tensor 'model\.layers\.1\.mlp\.up_proj"):
    hf.load_pretrained(saved_folder)


def test_wrong_shape(saved_folder):
  _rewrite_tensors(saved_folder, lambda t: t.update({"model.norm.weight": np.ones(7, np.float32)}))
  with pytest.raises(ModelLoadError, match=r"model\.safetensors.*'model\.norm\.weight' has shape \(7,\)"):
    hf.load_pretrained(saved_folder)


def test_truncated_safetensors(saved_folder):
  path = saved_folder / hf.SINGLE_FILE
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ModelLoadError, match=r"model\.safetensors.*truncated"):
    hf.load_pretrained(saved_folder)
  path.write_bytes(b"\xff" * 5)
  with pytest.raises(ModelLoadError, match=r"model\.safetensors.*truncated"):
    hf.load_pretrained(saved_folder)


def test_missing_weights_file(saved_folder):
  (saved_folder / hf.SINGLE_FILE).unlink()
  with pytest.raises(ModelLoadError, match="no model.safetensors"):
    hf.load_pretrained(saved_folder)


def test_unsupported_config_option(saved_folder):
  config = json.loads((saved_folder / "config.json").read_text())
  (saved_folder / "config.json").write_text(json.dumps({**config, "rope_parameters": {"rope_type": "yarn",
                                                                                      "rope_theta": 1e4}}))
  with pytest.raises(ModelLoadError, match=r"config\.json: unsupported.*yarn"):
    hf.load_pretrained(saved_folder)
  (saved_folder / "config.json").write_text("{not json")
  with pytest.raises(ModelLoadError, match=r"config\.json: not valid JSON"):
    hf.load_pretrained(saved_folder)
