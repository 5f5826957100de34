"""Llama family: parity with transformers (PyTorch) on tiny random configs, and the module's own contracts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.interop import hf
from zett.models import llama
from zett.testing import tiny_llama
from zett.testing.torch_reference import LLAMA_VARIANTS, padded_batch, random_hf_causal_lm, torch_logits

torch = pytest.importorskip("torch")


def _apply(model):
  # Jitted: one XLA compile is far cheaper than eager op-by-op dispatch of the scanned layers.
  return jax.jit(model.module.apply, static_argnames=("compute_logits",))


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_logits_match_transformers_on_padded_batch(variant, tmp_path):
  reference = random_hf_causal_lm(variant)
  reference.save_pretrained(str(tmp_path))
  model = hf.load_pretrained(tmp_path)
  assert model.config.model_type == LLAMA_VARIANTS[variant]["model_type"]
  ids, mask, positions = padded_batch(model.config.vocab_size)
  expected = torch_logits(reference, ids, mask, positions)
  ours = np.asarray(_apply(model)({"params": model.params}, input_ids=ids, attention_mask=mask).logits)
  real = mask.astype(bool)
  assert np.abs(ours[real] - expected[real]).max() < 1e-4


def test_inputs_embeds_path_equals_input_ids_path():
  model = tiny_llama(vocab_size=100, hidden_size=32)
  ids, mask, _ = padded_batch(100)
  by_ids = _apply(model)({"params": model.params}, input_ids=ids, attention_mask=mask)
  embeds = jnp.take(model.params["embed_tokens"], ids, axis=0)
  by_embeds = _apply(model)({"params": model.params}, inputs_embeds=embeds, attention_mask=mask)
  np.testing.assert_allclose(by_embeds.logits, by_ids.logits, atol=1e-6)
  np.testing.assert_allclose(by_embeds.hidden_states, by_ids.hidden_states, atol=1e-6)
  with pytest.raises(ValueError, match="exactly one"):
    _apply(model)({"params": model.params}, input_ids=ids, inputs_embeds=embeds)


@pytest.mark.parametrize("tied", [False, True])
def test_output_embeddings_and_bias_override(tied):
  model = tiny_llama(vocab_size=100, hidden_size=32, tie_word_embeddings=tied)
  ids = np.arange(3, 15, dtype=np.int32).reshape(2, 6)
  rng = np.random.default_rng(0)
  new_output_vd = rng.normal(size=(37, 32)).astype(np.float32)
  new_bias_v = rng.normal(size=(37,)).astype(np.float32)
  out = _apply(model)({"params": model.params}, input_ids=ids, output_embeddings=new_output_vd,
                           output_bias=new_bias_v)
  assert out.logits.shape == (2, 6, 37)
  expected = np.einsum("btd,vd->btv", np.asarray(out.hidden_states), new_output_vd) + new_bias_v
  np.testing.assert_allclose(out.logits, expected, atol=1e-4)
  default = _apply(model)({"params": model.params}, input_ids=ids)
  head = model.embeddings.input if tied else model.embeddings.output
  np.testing.assert_allclose(default.logits, np.einsum("btd,vd->btv", np.asarray(default.hidden_states), head),
                             atol=1e-4)
  if not tied:
    no_logits = _apply(model)({"params": model.params}, input_ids=ids, compute_logits=False)
    assert no_logits.logits is None and no_logits.hidden_states.shape == (2, 6, 32)


def test_gradients_through_embeddings_are_finite_with_padding():
  # The hypernetwork trains through inputs_embeds and output_embeddings; fully masked padding rows must not
  # produce NaNs that leak into those gradients.
  model = tiny_llama(vocab_size=100, hidden_size=32)
  ids, mask, _ = padded_batch(100)
  embeds = jnp.take(model.params["embed_tokens"], ids, axis=0)

  def loss(embeds, output_vd):
    logits = model.module.apply({"params": model.params}, inputs_embeds=embeds, attention_mask=mask,
                                output_embeddings=output_vd).logits
    return jnp.sum(jax.nn.log_softmax(logits) * mask[..., None])
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(embeds, model.embeddings.output)
  assert all(bool(jnp.isfinite(g).all()) for g in grads)
  assert float(jnp.abs(grads[0][mask == 0]).max()) == 0.0  # padding inputs do not influence real positions


def test_kv_cache_decoding_equals_full_forward():
  model = tiny_llama(vocab_size=100, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
  ids, mask, _ = padded_batch(100, length=12)
  ids, mask = ids[[0, 2]], mask[[0, 2]]  # a full row and a left-padded row: prompt 8, then 4 steps
  full = np.asarray(_apply(model)({"params": model.params}, input_ids=ids, attention_mask=mask).logits)
  apply = _apply(model)
  cache = llama.init_cache(model.config, batch_size=2, max_length=16)
  out = apply({"params": model.params}, input_ids=ids[:, :8], attention_mask=mask[:, :8], cache=cache)
  steps = [np.asarray(out.logits)]
  cache = out.cache
  for t in range(8, 12):
    out = apply({"params": model.params}, input_ids=ids[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache)
    cache = out.cache
    steps.append(np.asarray(out.logits))
  incremental = np.concatenate(steps, axis=1)
  real = mask.astype(bool)
  assert int(cache.index) == 12
  assert np.abs(incremental[real] - full[real]).max() < 1e-5


def test_bfloat16_compute_close_to_float32():
  model = tiny_llama(vocab_size=100, hidden_size=32)
  ids, mask, _ = padded_batch(100)
  f32 = _apply(model)({"params": model.params}, input_ids=ids, attention_mask=mask).logits
  bf16 = jax.jit(llama.make_module(model.config, jnp.bfloat16).apply)({"params": model.params}, input_ids=ids,
                                                               attention_mask=mask)
  assert bf16.logits.dtype == jnp.float32 and bf16.hidden_states.dtype == jnp.bfloat16
  real = mask.astype(bool)
  assert np.abs(np.asarray(bf16.logits)[real] - np.asarray(f32)[real]).max() < 0.05


def test_every_parameter_has_known_logical_axes():
  config = llama.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True)
  specs = llama.logical_param_axes(config)
  shapes = llama.abstract_params(config)
  spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  shape_leaves = jax.tree_util.tree_leaves(shapes)
  assert len(spec_leaves) == len(shape_leaves)
  for spec, shape in zip(spec_leaves, shape_leaves):
    assert len(spec) == len(shape.shape) and set(spec) <= set(llama.LOGICAL_AXIS_NAMES)
  assert sum(int(np.prod(s.shape)) for s in shape_leaves) == 134_515_008  # SmolLM2-135M


def test_set_embeddings_changes_vocab():
  model = tiny_llama(vocab_size=100, hidden_size=32)
  new = model.family.get_embeddings(model.config, model.params)._replace(
      input=np.zeros((7, 32), np.float32), output=np.ones((7, 32), np.float32))
  config, params = model.family.set_embeddings(model.config, model.params, new)
  out = jax.jit(llama.make_module(config).apply)({"params": params}, input_ids=np.array([[1, 6]], np.int32))
  assert config.vocab_size == 7 and out.logits.shape == (1, 2, 7)
