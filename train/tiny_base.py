"""The "tiny-llama" base of `configs/tiny.yaml`: a random tiny Llama with a small byte-level BPE tokenizer.

Both are built in memory from offline material (the tokenizer is trained on Python standard-library source), so the
tiny config runs anywhere without files or network. Tests that need a base that knows something pretrain it first.
"""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path

import jax.numpy as jnp

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
_CORPUS_FILES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py", "heapq.py")


def stdlib_text(names=_CORPUS_FILES) -> str:
  """Concatenated source of a few standard-library modules (present on every Python install)."""
  folder = Path(sysconfig.get_paths()["stdlib"])
  return "\n\n".join((folder / name).read_text(encoding="utf-8") for name in names if (folder / name).is_file())


@functools.cache
def tiny_tokenizer(vocab_size: int = 512):
  """A byte-level BPE `zett.tokenization.Tokenizer` of `vocab_size` pieces (deterministic)."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  from zett.tokenization.tokenizer import from_backend
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  backend.train_from_iterator(stdlib_text().split("\n\n"), trainer)
  return from_backend(backend, f"tiny-bpe-{vocab_size}",
                      roles={"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"})


def tiny_base(seed: int = 0, hidden_size: int = 64, num_hidden_layers: int = 2, vocab_size: int = 512,
              dtype=jnp.float32, param_dtype=jnp.float32):
  """A random tiny Llama `BaseModel` whose tokenizer is `tiny_tokenizer(vocab_size)`."""
  from zett.models.base import cast_params
  from zett.testing.tiny import tiny_llama
  tokenizer = tiny_tokenizer(vocab_size)
  base = tiny_llama(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                    seed=seed, dtype=dtype, tokenizer=tokenizer)
  if param_dtype != jnp.float32:
    base = type(base)(**{**base.__dict__, "params": cast_params(base.params, param_dtype)})
  return base


def tiny_xlmr_base(seed: int = 0, hidden_size: int = 64, num_hidden_layers: int = 2, vocab_size: int = 512,
                   dtype=jnp.float32, param_dtype=jnp.float32):
  """A random tiny XLM-R-style masked LM (tied embeddings + LM-head output bias) with `tiny_tokenizer`."""
  import jax
  from zett.models import bert
  from zett.models.base import BaseModel, cast_params, params_sha256
  tokenizer = tiny_tokenizer(vocab_size)
  config = bert.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size,
                           num_hidden_layers=num_hidden_layers, num_attention_heads=max(1, hidden_size // 16),
                           intermediate_size=2 * hidden_size, max_position_embeddings=520,
                           pad_token_id=tokenizer.roles["pad"], bos_token_id=tokenizer.roles["bos"],
                           eos_token_id=tokenizer.roles["eos"], model_type="xlm-roberta")
  params = bert.init_params(config, jax.random.key(seed))
  params = cast_params(params, param_dtype) if param_dtype != jnp.float32 else params
  return BaseModel(family=bert.FAMILY, config=config, module=bert.make_module(config, dtype), params=params,
                   tokenizer=tokenizer, name=f"tiny-xlmr-v{vocab_size}-d{hidden_size}",
                   weights_sha256=params_sha256(params))
