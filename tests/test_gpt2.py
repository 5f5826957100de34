"""GPT-2 family: parity with transformers (PyTorch) on tiny random configs, export, KV cache, contracts."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.interop import hf
from zett.interop._safetensors import write_safetensors
from zett.models import MissingTensorError, ModelLoadError, ShapeError, family_for_model_type, gpt2
from zett.testing.tiny import apply_jitted
from zett.testing.torch_reference import (base_model_from_torch, numpy_state_dict, padded_batch,
                                          randomize_constant_params, torch_logits)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WIDTH = 96, 32
VARIANTS = {
    "tied": dict(),
    # Every optional code path at once: untied head, relu, unscaled + inverse-layer-scaled attention.
    "untied_options": dict(tie_word_embeddings=False, activation_function="relu", scale_attn_weights=False,
                           scale_attn_by_inverse_layer_idx=True),
}


def _random_hf_gpt2(variant="tied", seed=0):
  config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=4, n_positions=32, n_inner=40,
                                   bos_token_id=1, eos_token_id=2, **VARIANTS[variant])
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).float().eval()
  return randomize_constant_params(model, lambda name: "ln_" in name)


def _tiny(variant="tied", dtype=jnp.float32):
  reference = _random_hf_gpt2(variant)
  return reference, base_model_from_torch(gpt2, reference, f"tiny-gpt2-{variant}", dtype)


@pytest.fixture(scope="module")
def tied():
  return _tiny("tied")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_folder_load_matches_transformers_on_padded_batch(variant, tmp_path):
  reference = _random_hf_gpt2(variant)
  reference.save_pretrained(str(tmp_path))
  model = hf.load_pretrained(tmp_path)
  assert model.family is gpt2.FAMILY and model.config.tie_word_embeddings == (variant == "tied")
  ids, mask, positions = padded_batch(VOCAB)  # full, right-padded and left-padded rows
  expected = torch_logits(reference, ids, mask, positions)
  ours = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask).logits)
  real = mask.astype(bool)
  assert np.abs(ours[real] - expected[real]).max() < 1e-4
  # Unpadded, every position default on both sides.
  assert np.abs(np.asarray(apply_jitted(model, input_ids=ids[:1]).logits) - torch_logits(reference, ids[:1])).max() < 1e-4


def test_inputs_embeds_path_equals_input_ids_path(tied):
  _, model = tied
  ids, mask, _ = padded_batch(VOCAB)
  by_ids = apply_jitted(model, input_ids=ids, attention_mask=mask)
  by_embeds = apply_jitted(model, inputs_embeds=jnp.take(model.params["embed_tokens"], ids, axis=0), attention_mask=mask)
  np.testing.assert_allclose(by_embeds.logits, by_ids.logits, atol=1e-6)
  np.testing.assert_allclose(by_embeds.hidden_states, by_ids.hidden_states, atol=1e-6)
  with pytest.raises(ValueError, match="exactly one"):
    apply_jitted(model, input_ids=ids, inputs_embeds=by_embeds.hidden_states)
  with pytest.raises(ValueError, match="exactly one"):
    apply_jitted(model, attention_mask=mask)


def test_output_embeddings_and_bias_override(tied):
  _, model = tied
  ids, mask, _ = padded_batch(VOCAB)
  rng = np.random.default_rng(0)
  new_output_vd = rng.normal(size=(37, WIDTH)).astype(np.float32)
  new_bias_v = rng.normal(size=(37,)).astype(np.float32)
  out = apply_jitted(model, input_ids=ids, attention_mask=mask, output_embeddings=new_output_vd, output_bias=new_bias_v)
  assert out.logits.shape == (3, 10, 37) and out.logits.dtype == jnp.float32
  expected = np.einsum("btd,vd->btv", np.asarray(out.hidden_states), new_output_vd) + new_bias_v
  np.testing.assert_allclose(out.logits, expected, atol=1e-4)
  # hidden_states is what the default (tied) head projects too.
  default = apply_jitted(model, input_ids=ids, attention_mask=mask)
  np.testing.assert_allclose(out.hidden_states, default.hidden_states)
  np.testing.assert_allclose(default.logits, np.einsum("btd,vd->btv", np.asarray(default.hidden_states),
                                                       np.asarray(model.params["embed_tokens"])), atol=1e-4)
  no_logits = apply_jitted(model, input_ids=ids, compute_logits=False)
  assert no_logits.logits is None and no_logits.hidden_states.shape == (3, 10, WIDTH)


def test_kv_cache_decoding_equals_full_forward(tied):
  _, model = tied
  ids, mask, _ = padded_batch(VOCAB, length=12)
  ids, mask = ids[[0, 2]], mask[[0, 2]]  # a full row and a left-padded row: prompt of 8, then 4 single steps
  full = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask).logits)
  cache = gpt2.init_cache(model.config, batch_size=2, max_length=16)
  out = apply_jitted(model, input_ids=ids[:, :8], attention_mask=mask[:, :8], cache=cache)
  steps, cache = [np.asarray(out.logits)], out.cache
  for t in range(8, 12):
    out = apply_jitted(model, input_ids=ids[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache)
    steps.append(np.asarray(out.logits))
    cache = out.cache
  incremental = np.concatenate(steps, axis=1)
  real = mask.astype(bool)
  assert int(cache.index) == 12 and incremental.shape == full.shape
  assert np.abs(incremental[real] - full[real]).max() < 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_reloads_in_transformers_with_equal_logits(variant, tmp_path):
  _, model = _tiny(variant)
  hf.save_pretrained(model, tmp_path / "export")
  config = json.loads((tmp_path / "export" / "config.json").read_text())
  assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"),
                                                                     output_loading_info=True)
  assert isinstance(reloaded, transformers.GPT2LMHeadModel)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  ids, mask, positions = padded_batch(VOCAB)
  expected = torch_logits(reloaded.float().eval(), ids, mask, positions)
  ours = np.asarray(apply_jitted(model, input_ids=ids, attention_mask=mask).logits)
  real = mask.astype(bool)
  assert np.abs(ours[real] - expected[real]).max() < 1e-4
  # The name map is a bijection: back through params_from_hf gives identical arrays.
  again = gpt2.params_from_hf(model.config, gpt2.params_to_hf(model.config, model.params))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, model.params)


def test_missing_or_misshapen_tensor_raises_naming_it(tmp_path):
  reference = _random_hf_gpt2()
  config = gpt2.config_from_hf(reference.config.to_dict())
  tensors = numpy_state_dict(reference)
  missing = dict(tensors)
  del missing["transformer.h.1.mlp.c_fc.bias"]
  with pytest.raises(MissingTensorError, match=r"transformer\.h\.1\.mlp\.c_fc\.bias"):
    gpt2.params_from_hf(config, missing)
  misshapen = dict(tensors, **{"transformer.wpe.weight": np.zeros((31, WIDTH), np.float32)})
  with pytest.raises(ShapeError, match=r"transformer\.wpe\.weight.*\(31, 32\)"):
    gpt2.params_from_hf(config, misshapen)
  untied = gpt2.config_from_hf(dict(reference.config.to_dict(), tie_word_embeddings=False))
  with pytest.raises(MissingTensorError, match="lm_head.weight"):
    gpt2.params_from_hf(untied, {k: v for k, v in tensors.items() if k != "lm_head.weight"})
  # Through a folder, the error also names the file.
  reference.save_pretrained(str(tmp_path))
  write_safetensors(tmp_path / "model.safetensors", {k: v for k, v in missing.items() if k != "lm_head.weight"})
  with pytest.raises(MissingTensorError, match=r"model\.safetensors.*c_fc\.bias"):
    hf.load_pretrained(tmp_path)
  with pytest.raises(ValueError, match="add_cross_attention"):
    gpt2.config_from_hf(dict(reference.config.to_dict(), add_cross_attention=True))
  config_json = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(config_json, activation_function="mish")))
  with pytest.raises(ModelLoadError, match="activation_function 'mish'"):
    hf.load_pretrained(tmp_path)


def test_original_hub_names_without_prefix_load(tied):
  reference, model = tied
  unprefixed = {k.removeprefix("transformer."): v for k, v in numpy_state_dict(reference).items() if k != "lm_head.weight"}
  params = gpt2.params_from_hf(model.config, unprefixed)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, model.params)


def test_bfloat16_compute_close_to_float32(tied):
  _, model = tied
  ids, mask, _ = padded_batch(VOCAB)
  f32 = apply_jitted(model, input_ids=ids, attention_mask=mask).logits
  bf16 = apply_jitted(dataclasses.replace(model, module=gpt2.make_module(model.config, jnp.bfloat16)),
                input_ids=ids, attention_mask=mask)
  assert bf16.logits.dtype == jnp.float32 and bf16.hidden_states.dtype == jnp.bfloat16
  real = mask.astype(bool)
  assert np.abs(np.asarray(bf16.logits)[real] - np.asarray(f32)[real]).max() < 0.1


def test_full_size_logical_axes_and_parameter_count():
  from zett.models.llama import LOGICAL_AXIS_NAMES
  config = gpt2.config_from_hf(transformers.GPT2Config().to_dict())  # GPT-2 small
  specs = gpt2.logical_param_axes(config)
  shapes = jax.eval_shape(lambda: gpt2.init_params(config, jax.random.key(0)))
  spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  shape_leaves = jax.tree_util.tree_leaves(shapes)
  assert len(spec_leaves) == len(shape_leaves)
  for spec, shape in zip(spec_leaves, shape_leaves):
    assert len(spec) == len(shape.shape) and set(spec) - {None} <= set(LOGICAL_AXIS_NAMES)
  assert specs["embed_tokens"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert sum(int(np.prod(s.shape)) for s in shape_leaves) == 124_439_808  # GPT-2 small, tied


def test_family_registry_and_embeddings_swap(tied):
  _, model = tied
  assert family_for_model_type("gpt2") is gpt2.FAMILY and gpt2.FAMILY.is_causal
  family, config = model.family, model.config
  embeddings = family.get_embeddings(config, model.params)
  assert embeddings.output is None and embeddings.bias is None
  rng = np.random.default_rng(1)
  new_input, new_output = rng.normal(size=(2, 7, WIDTH)).astype(np.float32)
  untied_config, params = family.set_embeddings(config, model.params, embeddings._replace(input=new_input,
                                                                                          output=new_output))
  assert untied_config.vocab_size == 7 and not untied_config.tie_word_embeddings
  out = apply_jitted(dataclasses.replace(model, config=untied_config, module=gpt2.make_module(untied_config), params=params),
               input_ids=np.array([[1, 6]], np.int32))
  np.testing.assert_allclose(out.logits, np.einsum("btd,vd->btv", np.asarray(out.hidden_states), new_output),
                             atol=1e-5)
  tied_config, params = family.set_embeddings(untied_config, params, embeddings._replace(input=new_input))
  assert tied_config.tie_word_embeddings and "lm_head" not in params
  with pytest.raises(ValueError, match="no LM-head bias"):
    family.set_embeddings(config, model.params, embeddings._replace(bias=np.zeros(VOCAB, np.float32)))
