"""Tiny random base models for tests: real module code, random weights, no files or network."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zett.models import llama
from zett.models.base import BaseModel, params_sha256


def tiny_llama_config(
  vocab_size: int = 512,
  hidden_size: int = 64,
  num_hidden_layers: int = 2,
  num_attention_heads: int = 4,
  num_key_value_heads: int = 2,
  intermediate_size: int | None = None,
  tie_word_embeddings: bool = False,
  **overrides,
) -> llama.LlamaConfig:
  """A small Llama config (GQA by default); `overrides` set any other `LlamaConfig` field."""
  return llama.LlamaConfig(
    vocab_size=vocab_size,
    hidden_size=hidden_size,
    intermediate_size=intermediate_size or 2 * hidden_size,
    num_hidden_layers=num_hidden_layers,
    num_attention_heads=num_attention_heads,
    num_key_value_heads=num_key_value_heads,
    head_dim=hidden_size // num_attention_heads,
    tie_word_embeddings=tie_word_embeddings,
    max_position_embeddings=2048,
    **{"bos_token_id": 1, "eos_token_id": 2, **overrides},
  )


def tiny_llama(
  vocab_size: int = 512,
  hidden_size: int = 64,
  num_hidden_layers: int = 2,
  num_attention_heads: int = 4,
  num_key_value_heads: int = 2,
  tie_word_embeddings: bool = False,
  seed: int = 0,
  dtype=jnp.float32,
  tokenizer=None,
  **overrides,
) -> BaseModel:
  """A random Llama `BaseModel` (float32 params) for tests; pass `tokenizer` to attach one."""
  config = tiny_llama_config(
    vocab_size,
    hidden_size,
    num_hidden_layers,
    num_attention_heads,
    num_key_value_heads,
    tie_word_embeddings=tie_word_embeddings,
    **overrides,
  )
  params = llama.init_params(config, seed)
  return BaseModel(
    family=llama.FAMILY,
    config=config,
    module=llama.make_module(config, dtype),
    params=params,
    tokenizer=tokenizer,
    name=f"tiny-llama-v{vocab_size}-d{hidden_size}",
    weights_sha256=params_sha256(params),
  )


_COMPILED_FORWARDS = {}


def apply_jitted(model: BaseModel, **kwargs):
  """`model.module.apply` on `model.params`, compiled once per (config, dtype) in this process.

  Eager linen re-traces the scanned layers on every call, which makes tests that call a model often slow.
  """
  key = (model.module.config, model.module.dtype)
  if key not in _COMPILED_FORWARDS:
    _COMPILED_FORWARDS[key] = jax.jit(model.module.apply, static_argnames=("compute_logits",))
  return _COMPILED_FORWARDS[key]({"params": model.params}, **kwargs)
