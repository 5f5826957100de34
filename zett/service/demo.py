"""A tiny random engine (tiny Llama + byte-level BPE + initialised hypernetwork) for tests, benchmarks and demos.

Nothing is downloaded: the tokenizer is trained in a fraction of a second on Python standard-library
source, the model and hypernetwork weights are random. `zett serve --model tiny-random` uses it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from zett.errors import UsageError

TINY_MODEL = "tiny-random"
SPECIAL_TOKENS = ("<|endoftext|>", "<s>", "</s>")


def parse_tiny_spec(spec: str) -> tuple[int, int]:
  """ "tiny-random[:HIDDEN[:LAYERS]]" -> (hidden size, hypernetwork layers)."""
  parts = spec.split(":")
  if parts[0] != TINY_MODEL or len(parts) > 3 or not all(p.isdigit() and int(p) > 0 for p in parts[1:]):
    raise UsageError(f"{spec!r}: expected {TINY_MODEL}[:HIDDEN[:LAYERS]], e.g. {TINY_MODEL}:256:3")
  numbers = [int(p) for p in parts[1:]] + [64, 1][len(parts) - 1 :]
  if numbers[0] % 32:
    raise UsageError(f"{spec!r}: HIDDEN must be a multiple of 32")
  return numbers[0], numbers[1]


def tiny_tokenizer(vocab_size: int = 512, train_bytes: int = 300_000):
  """A byte-level BPE `tokenizers.Tokenizer`; ids 0, 1, 2 are <|endoftext|>, <s>, </s>."""
  from zett.stdlib_source import stdlib_texts_up_to
  from zett.testing.bpe import train_byte_level_bpe

  text = "".join(stdlib_texts_up_to(train_bytes))
  return train_byte_level_bpe([text[i : i + 10_000] for i in range(0, len(text), 10_000)], vocab_size, SPECIAL_TOKENS)


def tiny_model(vocab_size: int = 512, hidden_size: int = 64, num_hidden_layers: int = 2, seed: int = 0):
  """A random tiny Llama `BaseModel` (untied) carrying `tiny_tokenizer(vocab_size)`."""
  from zett.testing.tiny import tiny_llama
  from zett.tokenization import from_backend

  name = f"{TINY_MODEL}-v{vocab_size}-d{hidden_size}"
  tokenizer = from_backend(
    tiny_tokenizer(vocab_size), name, roles={"bos": "<s>", "eos": "</s>", "pad": "<|endoftext|>"}
  )
  model = tiny_llama(
    vocab_size=vocab_size,
    hidden_size=hidden_size,
    num_hidden_layers=num_hidden_layers,
    seed=seed,
    tokenizer=tokenizer,
  )
  return dataclasses.replace(model, name=name)


def tiny_hypernet(model, num_layers: int = 1, seed: int = 1):
  """A random `hypernet.Hypernetwork` for `model` (not the zero-residual init: predictions are
  the real network's, not just the mean of the subtoken embeddings).

  Params are drawn with numpy from the abstract shapes: flax's op-by-op `init` takes tens of seconds
  on a loaded CPU, this takes milliseconds.
  """
  import flax.linen as nn

  import zett.hypernet as hypernet  # not `from zett import hypernet`: pyright resolves only the dotted name

  config = hypernet.config_for_base(model, num_layers=num_layers, num_heads=max(1, int(model.config.hidden_size) // 32))
  abstract = nn.meta.unbox(hypernet.abstract_params(config, model.embeddings))
  return hypernet.Hypernetwork(config, _random_params(abstract, np.random.default_rng(seed)))


def tiny_engine(vocab_size: int = 512, hidden_size: int = 64, cache_size: int = 8192, seed: int = 0):
  """An `Engine` over `tiny_model` and `tiny_hypernet`."""
  from zett.service.engine import Engine

  model = tiny_model(vocab_size, hidden_size, seed=seed)
  return Engine(model, tiny_hypernet(model, seed=seed + 1), cache_size=cache_size)


def _random_params(abstract, rng: np.random.Generator):
  """Normal(0, 0.02) weights, norms' scales near 1, biases near 0, matching an abstract param tree."""

  def draw(path, spec):
    name = str(getattr(path[-1], "key", path[-1]))
    noise = rng.normal(0.0, 0.02, spec.shape).astype(np.float32)
    if name == "scale":
      noise += 1.0
    elif name != "bias" and len(spec.shape) >= 2:
      fan_in = spec.shape[-2] if len(spec.shape) == 2 else int(np.prod(spec.shape[1:-1]))
      noise *= max(1.0, 50.0 / np.sqrt(max(fan_in, 1)))
    return jnp.asarray(noise)

  return jax.tree_util.tree_map_with_path(draw, abstract)


@functools.cache
def shared_tiny_engine():
  """One `tiny_engine()` per process, so test modules and benchmark runs share its compilations."""
  return tiny_engine()
