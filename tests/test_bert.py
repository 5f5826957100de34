"""BERT / RoBERTa / XLM-R masked LMs: parity with transformers (PyTorch), export, contracts, bad input."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.interop import hf
from zett.interop._safetensors import write_safetensors
from zett.models import MissingTensorError, ShapeError, bert, family_for_model_type
from zett.testing.tiny import apply_jitted
from zett.testing.torch_reference import (base_model_from_torch, numpy_state_dict, randomize_constant_params,
                                          torch_logits)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WIDTH, LENGTH = 96, 32, 10
VARIANTS = {
    # BERT's LM head uses hidden_act (gelu_new here), RoBERTa's is always exact gelu.
    "bert": dict(model_type="bert", hidden_act="gelu_new", type_vocab_size=2, pad_token_id=0),
    "roberta_untied": dict(model_type="roberta", tie_word_embeddings=False, type_vocab_size=1, pad_token_id=1),
    "xlm-roberta": dict(model_type="xlm-roberta", type_vocab_size=1, pad_token_id=1),
}


def _random_hf_mlm(variant, seed=0):
  options = dict(VARIANTS[variant])
  config = transformers.AutoConfig.for_model(
      options.pop("model_type"), vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=40, max_position_embeddings=24, **options)
  torch.manual_seed(seed)
  model = transformers.AutoModelForMaskedLM.from_config(config, attn_implementation="eager").float().eval()
  return randomize_constant_params(model, lambda name: "LayerNorm" in name or "layer_norm" in name)


def _tiny(variant="bert", dtype=jnp.float32):
  reference = _random_hf_mlm(variant)
  return reference, base_model_from_torch(bert, reference, f"tiny-{variant}", dtype)


def _right_padded_batch(pad_token_id, seed=0):
  """ids, mask [3, LENGTH]: full, right-padded (the encoder layout transformers' defaults assume), mostly padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, VOCAB, size=(3, LENGTH)).astype(np.int32)
  mask = np.ones((3, LENGTH), np.int32)
  mask[1, 6:] = 0
  mask[2, 2:] = 0
  ids[mask == 0] = pad_token_id
  return ids, mask


@pytest.fixture(scope="module")
def tiny_bert():
  return _tiny("bert")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_folder_load_matches_transformers_on_padded_batch(variant, tmp_path):
  reference = _random_hf_mlm(variant)
  reference.save_pretrained(str(tmp_path))
  model = hf.load_pretrained(tmp_path)
  assert model.family is bert.FAMILY and model.config.model_type == reference.config.model_type
  ids, mask = _right_padded_batch(model.config.pad_token_id)
  real = mask.astype(bool)
  expected = torch_logits(reference, ids, mask)
  ours = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask).logits)
  assert np.abs(ours[real] - expected[real]).max() < 1e-4
  if model.config.type_vocab_size > 1:
    token_types = (np.arange(LENGTH) >= 4).astype(np.int32)[None].repeat(3, 0)
    with torch.no_grad():
      expected = reference(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                           token_type_ids=torch.as_tensor(token_types, dtype=torch.long)).logits.numpy()
    ours = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask, token_type_ids=token_types).logits)
    assert np.abs(ours[real] - expected[real]).max() < 1e-4


def test_left_padding_gives_the_unpadded_logits():
  # Positions count real tokens, so a left-padded row equals the same tokens without padding.
  _, model = _tiny("xlm-roberta")
  ids, _ = _right_padded_batch(1)
  left_ids = np.concatenate([np.full((1, 4), 1, np.int32), ids[:1, :6]], axis=1)
  left_mask = (np.arange(LENGTH) >= 4).astype(np.int32)[None]
  padded = np.asarray(apply_jitted(model, input_ids=left_ids, attention_mask=left_mask).logits)[0, 4:]
  unpadded = np.asarray(apply_jitted(model, input_ids=ids[:1, :6]).logits)[0]
  assert np.abs(padded - unpadded).max() < 1e-5


def test_inputs_embeds_path_equals_input_ids_path(tiny_bert):
  _, model = tiny_bert
  ids, mask = _right_padded_batch(0)
  by_ids = apply_jitted(model, input_ids=ids, attention_mask=mask)
  by_embeds = apply_jitted(model, inputs_embeds=jnp.take(model.params["embed_tokens"], ids, axis=0), attention_mask=mask)
  np.testing.assert_allclose(by_embeds.logits, by_ids.logits, atol=1e-6)
  with pytest.raises(ValueError, match="exactly one"):
    apply_jitted(model, input_ids=ids, inputs_embeds=by_embeds.hidden_states)


def test_lm_head_bias_and_output_override(tiny_bert):
  _, model = tiny_bert
  ids, mask = _right_padded_batch(0)
  embeddings = model.family.get_embeddings(model.config, model.params)
  default = apply_jitted(model, input_ids=ids, attention_mask=mask)
  # hidden_states is the LM head's transformed state: logits are exactly its projection plus the bias.
  np.testing.assert_allclose(default.logits, np.einsum("btd,vd->btv", np.asarray(default.hidden_states),
                                                       np.asarray(embeddings.input)) + embeddings.bias, atol=1e-4)
  assert np.abs(np.asarray(embeddings.bias)).max() > 0.01  # the random bias is really there
  rng = np.random.default_rng(0)
  new_output_vd = rng.normal(size=(37, WIDTH)).astype(np.float32)
  new_bias_v = rng.normal(size=(37,)).astype(np.float32)
  out = apply_jitted(model, input_ids=ids, attention_mask=mask, output_embeddings=new_output_vd, output_bias=new_bias_v)
  assert out.logits.shape == (3, LENGTH, 37)
  projected = np.einsum("btd,vd->btv", np.asarray(out.hidden_states), new_output_vd)
  np.testing.assert_allclose(out.logits, projected + new_bias_v, atol=1e-4)
  # A new vocabulary without a new bias has none (the old one belongs to the old vocabulary).
  np.testing.assert_allclose(apply_jitted(model, input_ids=ids, attention_mask=mask, output_embeddings=new_output_vd).logits,
                             projected, atol=1e-4)
  zero_bias = apply_jitted(model, input_ids=ids, attention_mask=mask, output_bias=np.zeros(VOCAB, np.float32))
  np.testing.assert_allclose(zero_bias.logits, default.logits - np.asarray(embeddings.bias), atol=1e-4)
  no_logits = apply_jitted(model, input_ids=ids, compute_logits=False)
  assert no_logits.logits is None and no_logits.hidden_states.shape == (3, LENGTH, WIDTH)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_reloads_in_transformers_with_equal_logits(variant, tmp_path):
  reference, model = _tiny(variant)
  hf.save_pretrained(model, tmp_path / "export")
  config = json.loads((tmp_path / "export" / "config.json").read_text())
  assert config["architectures"] == [type(reference).__name__] and config["model_type"] == model.config.model_type
  reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "export"),
                                                                     output_loading_info=True)
  assert type(reloaded) is type(reference)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  ids, mask = _right_padded_batch(model.config.pad_token_id)
  expected = torch_logits(reloaded.float().eval(), ids, mask)
  ours = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask).logits)
  real = mask.astype(bool)
  assert np.abs(ours[real] - expected[real]).max() < 1e-4
  again = bert.params_from_hf(model.config, bert.params_to_hf(model.config, model.params))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, model.params)
  # Same parameter count as transformers (tied tensors counted once): nothing dropped, nothing invented.
  # Untied, transformers keeps a dead `bias` beside the decoder.bias its forward pass reads.
  dead_bias = 0 if model.config.tie_word_embeddings else VOCAB
  assert sum(p.numel() for p in reference.parameters()) - dead_bias == model.num_params()


def test_missing_or_misshapen_tensor_raises_naming_it(tmp_path):
  reference = _random_hf_mlm("bert")
  config = bert.config_from_hf(reference.config.to_dict())
  tensors = numpy_state_dict(reference)
  head_free = {k: v for k, v in tensors.items() if not k.startswith("cls.")}  # a bare BertModel checkpoint
  with pytest.raises(MissingTensorError, match=r"cls\.predictions\.transform\.dense\.weight"):
    bert.params_from_hf(config, head_free)
  with pytest.raises(ShapeError, match=r"encoder\.layer\.1\.intermediate\.dense\.weight.*\(40, 31\)"):
    bert.params_from_hf(config, dict(tensors, **{
        "bert.encoder.layer.1.intermediate.dense.weight": np.zeros((40, 31), np.float32)}))
  reference.save_pretrained(str(tmp_path))
  write_safetensors(tmp_path / "model.safetensors", {k: v for k, v in head_free.items() if k != "cls.predictions.bias"})
  with pytest.raises(MissingTensorError, match=r"model\.safetensors.*cls\.predictions"):
    hf.load_pretrained(tmp_path)
  with pytest.raises(ValueError, match="position_embedding_type"):
    bert.config_from_hf(dict(reference.config.to_dict(), position_embedding_type="relative_key"))
  with pytest.raises(ValueError, match="masked LMs only"):
    bert.config_from_hf(dict(reference.config.to_dict(), is_decoder=True))


def test_legacy_gamma_beta_names_load(tiny_bert):
  reference, model = tiny_bert
  legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
            for k, v in numpy_state_dict(reference).items()}
  jax.tree_util.tree_map(np.testing.assert_array_equal, bert.params_from_hf(model.config, legacy), model.params)


def test_bfloat16_compute_close_to_float32(tiny_bert):
  _, model = tiny_bert
  ids, mask = _right_padded_batch(0)
  f32 = apply_jitted(model, input_ids=ids, attention_mask=mask).logits
  bf16 = apply_jitted(dataclasses.replace(model, module=bert.make_module(model.config, jnp.bfloat16)), input_ids=ids,
                attention_mask=mask)
  assert bf16.logits.dtype == jnp.float32 and bf16.hidden_states.dtype == jnp.bfloat16
  real = mask.astype(bool)
  assert np.abs(np.asarray(bf16.logits)[real] - np.asarray(f32)[real]).max() < 0.1


def test_full_size_logical_axes():
  from zett.models.llama import LOGICAL_AXIS_NAMES
  config = bert.config_from_hf(transformers.XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514,
                                                             type_vocab_size=1).to_dict())  # xlm-roberta-base
  specs = bert.logical_param_axes(config)
  shapes = jax.eval_shape(lambda: bert.init_params(config, jax.random.key(0)))
  spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  shape_leaves = jax.tree_util.tree_leaves(shapes)
  assert len(spec_leaves) == len(shape_leaves)
  for spec, shape in zip(spec_leaves, shape_leaves):
    assert len(spec) == len(shape.shape) and set(spec) - {None} <= set(LOGICAL_AXIS_NAMES)
  assert specs["embed_tokens"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert specs["lm_head_bias"] == jax.sharding.PartitionSpec("vocab")


def test_encoder_family_contract_and_embeddings_swap(tiny_bert):
  _, model = tiny_bert
  for model_type in ("bert", "roberta", "xlm-roberta"):
    assert family_for_model_type(model_type) is bert.FAMILY
  assert not bert.FAMILY.is_causal and bert.FAMILY.init_cache is None
  with pytest.raises(ValueError, match="no KV cache"):
    apply_jitted(model, input_ids=np.ones((1, 2), np.int32), cache=())
  family, config = model.family, model.config
  rng = np.random.default_rng(1)
  new_input, new_output = rng.normal(size=(2, 7, WIDTH)).astype(np.float32)
  new_bias = rng.normal(size=(7,)).astype(np.float32)
  embeddings = family.get_embeddings(config, model.params)
  untied_config, params = family.set_embeddings(config, model.params,
                                                embeddings._replace(input=new_input, output=new_output, bias=new_bias))
  assert untied_config.vocab_size == 7 and not untied_config.tie_word_embeddings
  swapped = dataclasses.replace(model, config=untied_config, module=bert.make_module(untied_config), params=params)
  out = apply_jitted(swapped, input_ids=np.array([[1, 6]], np.int32))
  np.testing.assert_allclose(out.logits, np.einsum("btd,vd->btv", np.asarray(out.hidden_states), new_output)
                             + new_bias, atol=1e-5)
  tied_config, params = family.set_embeddings(untied_config, params, embeddings._replace(input=new_input, bias=None))
  assert tied_config.tie_word_embeddings and "lm_head" not in params
  np.testing.assert_array_equal(family.get_embeddings(tied_config, params).bias, np.zeros(7, np.float32))
  with pytest.raises(ValueError, match="output bias has shape"):
    family.set_embeddings(config, model.params, embeddings._replace(input=new_input, bias=np.zeros(3, np.float32)))
