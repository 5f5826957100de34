"""The "tiny-llama" base of `configs/tiny.yaml`: a random tiny Llama with a small byte-level BPE tokenizer.

Both are built in memory from offline material (the tokenizer is trained on Python standard-library source), so the
tiny config runs anywhere without files or network. Tests that need a base that knows something pretrain it first.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from zett.stdlib_source import stdlib_text

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
CORPUS_FILES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py", "heapq.py")
"""The stdlib modules the tiny tokenizer is trained on (and the tests pretrain the tiny base on)."""


def corpus_text() -> str:
  """The source of `CORPUS_FILES` joined by blank lines (a file this Python lacks is left out)."""
  return stdlib_text(CORPUS_FILES, skip_missing=True)


@functools.cache
def tiny_tokenizer(vocab_size: int = 512):
  """A byte-level BPE `zett.tokenization.Tokenizer` of `vocab_size` pieces (deterministic)."""
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
):
  """A random tiny Llama `BaseModel` whose tokenizer is `tiny_tokenizer(vocab_size)`."""
  from zett.models.base import cast_params
  from zett.testing.tiny import tiny_llama

  tokenizer = tiny_tokenizer(vocab_size)
  base = tiny_llama(
    vocab_size=tokenizer.vocab_size,
    hidden_size=hidden_size,
    num_hidden_layers=num_hidden_layers,
    seed=seed,
    dtype=dtype,
    tokenizer=tokenizer,
  )
  if param_dtype != jnp.float32:
    base = type(base)(**{**base.__dict__, "params": cast_params(base.params, param_dtype)})
  return base


def tiny_xlmr_base(
  seed: int = 0,
  hidden_size: int = 64,
  num_hidden_layers: int = 2,
  vocab_size: int = 512,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
):
  """A random tiny XLM-R-style masked LM (tied embeddings + LM-head output bias) with `tiny_tokenizer`."""
  import jax

  from zett.models import bert
  from zett.models.base import BaseModel, cast_params, params_sha256

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
  params = cast_params(params, param_dtype) if param_dtype != jnp.float32 else params
  return BaseModel(
    family=bert.FAMILY,
    config=config,
    module=bert.make_module(config, dtype),
    params=params,
    tokenizer=tokenizer,
    name=f"tiny-xlmr-v{vocab_size}-d{hidden_size}",
    weights_sha256=params_sha256(params),
  )
