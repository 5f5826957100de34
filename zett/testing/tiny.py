"""Tiny random base models for tests: real module code, random weights, no files or network.

`tiny_base` and `tiny_xlmr_base` are the "tiny-llama" and "tiny-xlmr" bases of `configs/tiny.yaml`: they carry a
small byte-level BPE tokenizer trained in memory on Python standard-library source, so the tiny config runs anywhere.
Tests that need a base that knows something pretrain one first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from zett.models import llama
from zett.models.base import BaseModel, cast_params, params_sha256
from zett.stdlib_source import stdlib_text

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
CORPUS_FILES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py", "heapq.py")
"""The stdlib modules the tiny tokenizer is trained on (and the tests pretrain the tiny base on)."""


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
  return BaseModel.from_params(
    llama.FAMILY, config, params, f"tiny-llama-v{vocab_size}-d{hidden_size}", tokenizer, dtype
  )


def corpus_text() -> str:
  """The source of `CORPUS_FILES` joined by blank lines (a file this Python lacks is left out)."""
  return stdlib_text(CORPUS_FILES, skip_missing=True)


@functools.cache
def tiny_tokenizer(vocab_size: int = 512):
  """A byte-level BPE `zett.tokenization.Tokenizer` of `vocab_size` pieces trained on `corpus_text` (deterministic)."""
  from zett.testing.bpe import train_byte_level_bpe
  from zett.tokenization.tokenizer import from_backend

  backend = train_byte_level_bpe(corpus_text().split("\n\n"), vocab_size, SPECIAL_TOKENS)
  return from_backend(
    backend, f"tiny-bpe-{vocab_size}", roles={"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
  )


def tiny_base(
  seed: int = 0,
  hidden_size: int = 64,
  num_hidden_layers: int = 2,
  vocab_size: int = 512,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
) -> BaseModel:
  """The "tiny-llama" base: a random tiny Llama whose tokenizer is `tiny_tokenizer(vocab_size)` (weights sha256:
  `_drawn_base`)."""
  tokenizer = tiny_tokenizer(vocab_size)
  config = tiny_llama_config(tokenizer.vocab_size, hidden_size, num_hidden_layers)
  name = f"tiny-llama-v{tokenizer.vocab_size}-d{hidden_size}"
  return _drawn_base(llama.FAMILY, config, llama.init_params(config, seed), name, tokenizer, dtype, param_dtype)


def tiny_xlmr_base(
  seed: int = 0,
  hidden_size: int = 64,
  num_hidden_layers: int = 2,
  vocab_size: int = 512,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
) -> BaseModel:
  """The "tiny-xlmr" base: a random tiny XLM-R-style masked LM (tied embeddings + LM-head output bias) whose
  tokenizer is `tiny_tokenizer(vocab_size)` (weights sha256: `_drawn_base`)."""
  from zett.models import bert

  tokenizer = tiny_tokenizer(vocab_size)
  config = bert.BertConfig(
    vocab_size=tokenizer.vocab_size,
    hidden_size=hidden_size,
    num_hidden_layers=num_hidden_layers,
    num_attention_heads=max(1, hidden_size // 16),
    intermediate_size=2 * hidden_size,
    max_position_embeddings=520,
    pad_token_id=tokenizer.roles["pad"],
    bos_token_id=tokenizer.roles["bos"],
    eos_token_id=tokenizer.roles["eos"],
    model_type="xlm-roberta",
  )
  params = bert.init_params(config, jax.random.key(seed))
  name = f"tiny-xlmr-v{vocab_size}-d{hidden_size}"
  return _drawn_base(bert.FAMILY, config, params, name, tokenizer, dtype, param_dtype)


def _drawn_base(family, config, params, name: str, tokenizer, dtype, param_dtype) -> BaseModel:
  """A base over randomly drawn float32 `params`, cast to `param_dtype`.

  Its weights sha256 is that of the float32 draw whatever `param_dtype` is, as a loaded model's is that of its file
  whatever it is cast to: the same tiny base in float32 and in bfloat16 is the same base to a hypernetwork's check.
  """
  cast = cast_params(params, param_dtype) if param_dtype != jnp.float32 else params
  return BaseModel.from_params(family, config, cast, name, tokenizer, dtype, weights_sha256=params_sha256(params))


_COMPILED_FORWARDS = {}


def apply_jitted(model: BaseModel, **kwargs):
  """`model.module.apply` on `model.params`, compiled once per (config, dtype) in this process.

  Eager linen re-traces the scanned layers on every call, which makes tests that call a model often slow.
  """
  key = (model.module.config, model.module.dtype)
  if key not in _COMPILED_FORWARDS:
    _COMPILED_FORWARDS[key] = jax.jit(model.module.apply, static_argnames=("compute_logits",))
  return _COMPILED_FORWARDS[key]({"params": model.params}, **kwargs)
