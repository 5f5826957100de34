"""Shared tiny setup for the transfer tests: two small byte-level BPE tokenizers trained on local text
(Python standard library sources) and tiny random Llama bases that use the first one."""

from __future__ import annotations

import functools

from zett.stdlib_source import stdlib_text
from zett.testing.bpe import train_byte_level_bpe

_SPECIALS = ["<|endoftext|>", "<s>", "<pad>"]


def train_bpe(vocab_size: int, names: tuple[str, ...], specials=tuple(_SPECIALS)):
  """A byte-level BPE `zett.tokenization.Tokenizer` trained on the given stdlib files."""
  from zett.tokenization import from_backend
  text = stdlib_text(names)
  backend = train_byte_level_bpe([text[i:i + 2000] for i in range(0, len(text), 2000)], vocab_size, specials)
  return from_backend(backend, f"bpe{vocab_size}-{names[0]}", roles={"bos": "<s>", "eos": "<|endoftext|>",
                                                                       "pad": "<pad>"})


@functools.cache
def base_tokenizer():
  return train_bpe(400, ("textwrap.py", "string.py"))


@functools.cache
def target_tokenizer():
  return train_bpe(600, ("argparse.py",))


def tiny_base(tie_word_embeddings: bool = False, seed: int = 0, hidden_size: int = 32):
  from zett.testing.tiny import tiny_llama
  tok = base_tokenizer()
  return tiny_llama(vocab_size=tok.vocab_size, hidden_size=hidden_size, num_attention_heads=2,
                    num_key_value_heads=1, tie_word_embeddings=tie_word_embeddings, seed=seed,
                    tokenizer=tok)


def tiny_bert(tie_word_embeddings: bool = False, seed: int = 0, hidden_size: int = 32):
  """A random BERT masked LM over `base_tokenizer()`, with a random (non-zero) LM-head bias."""
  import jax
  import numpy as np
  from zett.models import bert
  from zett.models.base import BaseModel
  tok = base_tokenizer()
  config = bert.BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=2 * hidden_size, pad_token_id=2,
                           tie_word_embeddings=tie_word_embeddings)
  params = dict(bert.init_params(config, jax.random.key(seed)))
  params["lm_head_bias"] = np.random.default_rng(seed).normal(0, 0.5, tok.vocab_size).astype(np.float32)
  return BaseModel.from_params(bert.FAMILY, config, params, f"tiny-bert-v{tok.vocab_size}", tok)
