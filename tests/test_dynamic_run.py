"""Merged batches through tiny random models with a freshly initialised hypernetwork."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.dynamic import merge_batch, split_texts
from zett.dynamic.run import DynamicEmbedder, DynamicRunError, evaluate_decoder, evaluate_encoder
from zett.testing.tiny import tiny_llama

_TEXTS = [
    "The quick brown fox jumps over the lazy dog; the dog sleeps on.",
    "Die schnelle braune Füchsin springt über den faulen Hund und den Zaun.",
    "def wrap(text, width=70):\n    return TextWrapper(width=width).wrap(text)",
]


@pytest.fixture(scope="module")
def model(textwrap_bpe):
  tok = textwrap_bpe(320)
  return tiny_llama(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, tokenizer=tok)


@pytest.fixture(scope="module")
def embedder(model):
  return DynamicEmbedder(model, cache_capacity=64)


def test_fresh_hypernet_gives_mean_of_subtokens_through_the_cache(model, embedder):
  result = merge_batch(split_texts(model.tokenizer, _TEXTS))
  assert result.new_tokens, "word-level merging of these texts must create new tokens"
  embedder.cache.clear()
  rows = embedder.new_token_rows(result)
  base = np.asarray(model.embeddings.input)
  length = embedder.hypernetwork.config.surface_length
  expected = np.stack([base[list(ids[:length])].mean(0) for ids in result.new_token_base_ids])
  np.testing.assert_allclose(rows, expected, atol=1e-5)
  assert embedder.cache.misses == len(result.new_tokens) and embedder.cache.hits == 0
  again = embedder.embed(result)  # same batch: every new token is a hit now
  assert embedder.cache.hits == min(len(result.new_tokens), 64)
  uncached = DynamicEmbedder(model, cache_capacity=0).embed(result)
  for a, b in zip(again, uncached):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Base tokens keep their base rows.
  for ids, rows_i in zip(result.ids, again):
    is_base = ids < base.shape[0]
    np.testing.assert_array_equal(rows_i[is_base], base[ids[is_base]])


def test_decoder_without_merges_matches_base_exactly(model, embedder):
  report = evaluate_decoder(model, embedder, _TEXTS, max_merges=0, generate_tokens=4)
  assert report.prompt_tokens_merged == report.prompt_tokens_base and report.prefill_reduction == 0.0
  assert report.bits_per_byte_merged == pytest.approx(report.bits_per_byte_base, rel=1e-5)
  assert report.generated_merged_prefill == report.generated_base_prefill


@pytest.fixture(scope="module")
def word_level_report(model, embedder):
  return evaluate_decoder(model, embedder, _TEXTS, generate_tokens=4)


def test_decoder_word_level_prefill(model, word_level_report):
  report = word_level_report
  batch = split_texts(model.tokenizer, _TEXTS)
  total = sum(len(ids) for ids in batch.token_ids)
  assert report.prompt_tokens_base + report.continuation_tokens == total
  continuation_bytes = sum(len(t.encode()) for t in _TEXTS) - sum(
      len(b"".join(batch.id_to_bytes[i] for i in ids[:round(0.5 * len(ids))])) for ids in batch.token_ids)
  assert report.continuation_bytes == continuation_bytes
  assert report.stop_reason == "no_pairs" and report.prompt_tokens_merged < report.prompt_tokens_base
  assert 0.0 < report.prefill_reduction < 1.0 and report.new_tokens > 0
  # A random model over a ~320-token vocabulary spends about log2(320) bits per token.
  for bpb in (report.bits_per_byte_base, report.bits_per_byte_merged):
    assert np.isfinite(bpb) and 0.5 < bpb < 20
  assert all(len(g) == 4 and all(0 <= t < model.config.vocab_size for t in g) for g in report.generated_merged_prefill)


def test_generation_after_merged_prefill_matches_full_forward(model, embedder, word_level_report):
  """KV-cache decoding after a merged prefill = re-running the whole sequence without a cache."""
  batch = split_texts(model.tokenizer, _TEXTS)
  cuts = [round(0.5 * len(ids)) for ids in batch.token_ids]
  prompts = type(batch)([ids[:c] for ids, c in zip(batch.token_ids, cuts)],
                        [s[:c] for s, c in zip(batch.starts_pretoken, cuts)], batch.id_to_bytes)
  prompt_rows = embedder.embed(merge_batch(prompts, max_token_length=embedder.hypernetwork.config.surface_length))
  base = np.asarray(model.embeddings.input)
  out_vd = np.asarray(model.embeddings.output)
  generated = word_level_report.generated_merged_prefill
  width = max(len(r) for r in prompt_rows) + len(generated[0])

  @jax.jit
  def hidden_states(rows, mask):  # right padding is invisible to a causal model's real positions
    return model.module.apply({"params": model.params}, inputs_embeds=rows, attention_mask=mask,
                              compute_logits=False).hidden_states

  for step in range(len(generated[0])):
    rows = np.zeros((len(_TEXTS), width, base.shape[1]), np.float32)
    mask = np.zeros((len(_TEXTS), width), np.int32)
    for b, (prompt, tokens) in enumerate(zip(prompt_rows, generated)):
      real = len(prompt) + step
      rows[b, :real] = np.concatenate([prompt, base[tokens[:step]]], axis=0)
      mask[b, :real] = 1
    hidden = np.asarray(hidden_states(jnp.asarray(rows), jnp.asarray(mask)))
    for b, tokens in enumerate(generated):
      assert int(np.argmax(hidden[b, len(prompt_rows[b]) + step - 1] @ out_vd.T)) == tokens[step]


def test_encoder_reports_reduction_and_similarity(model, embedder):
  same = evaluate_encoder(model, embedder, _TEXTS, max_merges=0)
  assert same.tokens_merged == same.tokens_base and same.mean_pooled_cosine == pytest.approx(1.0, abs=1e-5)
  merged = evaluate_encoder(model, embedder, _TEXTS, target_reduction=0.2)
  assert merged.stop_reason == "target_reduction" and merged.reduction >= 0.2
  assert -1.0 <= merged.mean_pooled_cosine < 1.0


def test_bad_input(model, embedder):
  with pytest.raises(DynamicRunError, match="need 2"):
    evaluate_decoder(model, embedder, ["hello", "x"])
  with pytest.raises(DynamicRunError, match="no tokenizer"):
    evaluate_decoder(tiny_llama(vocab_size=model.config.vocab_size, hidden_size=32), embedder, _TEXTS)
  with pytest.raises(DynamicRunError, match="prompt_fraction"):
    evaluate_decoder(model, embedder, _TEXTS, prompt_fraction=1.0)
