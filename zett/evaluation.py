"""Tokenizer-independent evaluation of base models: bits per byte and tokens per byte.

Bits per byte (bpb) of a causal LM on texts, as computed here:

  * each text is tokenized on its own without added special tokens and cut into chunks of at most
    `max_length - 1` tokens (chunks do not see each other: no context carries across a cut);
  * each chunk is prefixed with one token -- the tokenizer's BOS, else the model config's BOS, else
    EOS / `<|endoftext|>` -- so the first real token is predicted too; the prefix itself is not scored;
  * bpb = sum over scored tokens of -log2 p(token | prefix, earlier tokens of the chunk), divided by
    the total UTF-8 byte count of the texts. Padding and special tokens found inside the text (e.g. a
    literal "<|im_end|>") are not scored, but their bytes stay in the denominator.

Tokens per byte = text tokens (specials included, the prefix excluded) / UTF-8 bytes.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_LENGTH_BUCKET = 32  # pad batch length up to a multiple of this, so few distinct shapes get compiled


def prefix_token_id(tokenizer, config=None) -> int:
  """The token every chunk starts with: BOS, else EOS, else `<|endoftext|>` (see module docstring)."""
  for candidate in (getattr(tokenizer, "bos_token_id", None), getattr(config, "bos_token_id", None),
                    getattr(tokenizer, "eos_token_id", None)):
    if candidate is not None:
      return int(candidate)
  token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
  if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
    raise ValueError("tokenizer has no BOS, EOS or <|endoftext|> token to prefix chunks with")
  return int(token_id)


def lm_eval_batches(tokenizer, texts: Sequence[str], max_length: int = 1024, batch_size: int = 8,
                    prefix_id: int | None = None, pad_id: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Right-padded static-size batches of chunks, as scored by `causal_lm_bits_per_byte`.

  Yields dicts of int32 [batch_size, T] arrays: input_ids, attention_mask, targets (the next token at
  each position) and target_mask (1 where that next token is scored).
  """
  if max_length < 2:
    raise ValueError("max_length must be at least 2 (prefix + one token)")
  prefix_id = prefix_token_id(tokenizer) if prefix_id is None else prefix_id
  pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                                else prefix_id)
  special_ids = np.asarray(sorted(set(tokenizer.all_special_ids)), np.int64)
  chunks = []
  for text in texts:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for start in range(0, len(ids), max_length - 1):
      chunks.append([prefix_id] + list(ids[start:start + max_length - 1]))
  for start in range(0, len(chunks), batch_size):
    group = chunks[start:start + batch_size]
    length = min(max_length, -(-max(len(c) for c in group) // _LENGTH_BUCKET) * _LENGTH_BUCKET)
    input_ids = np.full((batch_size, length), pad_id, np.int32)
    attention_mask = np.zeros((batch_size, length), np.int32)
    for row, chunk in enumerate(group):
      input_ids[row, :len(chunk)] = chunk
      attention_mask[row, :len(chunk)] = 1
    targets = np.concatenate([input_ids[:, 1:], np.full((batch_size, 1), pad_id, np.int32)], axis=1)
    target_mask = np.concatenate([attention_mask[:, 1:], np.zeros((batch_size, 1), np.int32)], axis=1)
    target_mask &= ~np.isin(targets, special_ids)
    yield {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets,
           "target_mask": target_mask.astype(np.int32)}


def _summed_nll_nats(module, params, batch):
  out = module.apply({"params": params}, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
  log_probs = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
  token_log_probs = jnp.take_along_axis(log_probs, batch["targets"][..., None], axis=-1)[..., 0]
  return -jnp.sum(token_log_probs * batch["target_mask"])


_summed_nll_nats_jit = jax.jit(_summed_nll_nats, static_argnums=0)


def causal_lm_bits_per_byte(model, tokenizer=None, texts: Sequence[str] = (), max_length: int = 1024,
                            batch_size: int = 8, params: Any = None) -> dict[str, float]:
  """Bits per byte of a causal `BaseModel` on `texts` (definition in the module docstring).

  Args:
    model: a `zett.models.load.BaseModel` whose family is causal.
    tokenizer: defaults to `model.tokenizer`.
    params: overrides `model.params` (e.g. with transferred embeddings).

  Returns:
    dict with bits_per_byte, tokens_per_byte, total_bits, num_bytes, num_scored_tokens, num_text_tokens.
  """
  if not model.family.is_causal:
    raise ValueError(f"{model.name}: bits per byte here needs a causal LM, got family {model.family.name}")
  tokenizer = tokenizer if tokenizer is not None else model.tokenizer
  if tokenizer is None:
    raise ValueError(f"{model.name}: no tokenizer given and the model has none")
  params = model.params if params is None else params
  num_bytes = sum(len(t.encode("utf-8")) for t in texts)
  if num_bytes == 0:
    raise ValueError("texts are empty")
  total_nats, scored, text_tokens = 0.0, 0, 0
  prefix_id = prefix_token_id(tokenizer, model.config)
  for batch in lm_eval_batches(tokenizer, texts, max_length, batch_size, prefix_id=prefix_id):
    total_nats += float(_summed_nll_nats_jit(model.module, params, batch))
    scored += int(batch["target_mask"].sum())
    text_tokens += int(batch["attention_mask"].sum()) - int((batch["attention_mask"][:, 0] > 0).sum())
  total_bits = total_nats / math.log(2)
  return {"bits_per_byte": total_bits / num_bytes, "tokens_per_byte": text_tokens / num_bytes,
          "total_bits": total_bits, "num_bytes": num_bytes, "num_scored_tokens": scored,
          "num_text_tokens": text_tokens}
