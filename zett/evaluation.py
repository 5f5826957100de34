"""How well a model predicts text, per UTF-8 byte, so models with different tokenizers compare directly.

Causal LMs -- *bits per byte* (`causal_lm_bits_per_byte`):

  * each text is tokenized on its own without added special tokens and cut into windows of at most
    `max_length - 1` tokens (windows do not see each other: no context carries across a cut);
  * each window is preceded by one start token -- the tokenizer's BOS, else the model config's BOS, else
    the tokenizer's EOS, else `<|endoftext|>` -- so the first real token is predicted too; the start token
    itself is not scored (with no start token at all, windows are `max_length` long and their first
    token goes unscored);
  * bpb = sum over text tokens of -log2 p(token | start, earlier tokens of the window) / UTF-8 bytes of the
    texts. Every text token is scored, special tokens found inside the text included.

Masked LMs -- *masked-LM bits per byte* (`masked_lm_bits_per_byte`, definition in its docstring).

Tokens per byte = text tokens (start token excluded) / UTF-8 bytes. Tokenizers are zett `Tokenizer`s (a model's
is one); other forms (transformers fast tokenizers, bare `tokenizers.Tokenizer`s) go through `load_tokenizer`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zett.errors import ZettError
from zett.models.base import BaseModel
from zett.tokenization import Tokenizer, TokenizerError, load_tokenizer

_LENGTH_BUCKET = 32  # pad a batch's length up to a multiple of this, so few distinct shapes get compiled


class EvalInputError(ZettError, ValueError):
  """Evaluation input (text file, dataset, model) that cannot be used."""


def _tokenizer(tokenizer) -> Tokenizer:
  """`tokenizer` as a `Tokenizer` (a model's already is one)."""
  if isinstance(tokenizer, Tokenizer):
    return tokenizer
  try:
    return load_tokenizer(tokenizer)
  except TokenizerError as e:
    raise EvalInputError(f"{type(tokenizer).__name__}: not a usable tokenizer ({e})") from None


def _model_tokenizer(model: BaseModel, tokenizer) -> Tokenizer:
  """`tokenizer`, by default the model's own, as a `Tokenizer`."""
  tokenizer = tokenizer if tokenizer is not None else model.tokenizer
  if tokenizer is None:
    raise EvalInputError(f"{model.name}: no tokenizer given and the model has none")
  return _tokenizer(tokenizer)


def count_tokens(tokenizer, texts: Sequence[str]) -> int:
  """Tokens for `texts` without added special tokens."""
  return int(sum(map(len, _tokenizer(tokenizer).encode_batch(list(texts)))))


def _mask_token_id(tokenizer: Tokenizer) -> int:
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  for content in ("<mask>", "[MASK]", "<MASK>"):
    if content in vocab:
      return int(vocab[content])
  raise EvalInputError(f"{tokenizer.name}: tokenizer has no mask token")


def _token_byte_counts(text: str, offsets) -> np.ndarray:
  """UTF-8 bytes each token covers; tokens sharing one span (byte pieces of one character) split it equally."""
  char_to_byte = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])])
  spans = [(int(char_to_byte[s]), int(char_to_byte[e])) for s, e in offsets]
  sharing: dict[tuple[int, int], int] = {}
  for span in spans:
    sharing[span] = sharing.get(span, 0) + 1
  return np.array([(e - s) / sharing[(s, e)] for s, e in spans], dtype=np.float64)


_LOGITS_BUDGET_BYTES = 1 << 29


def _rows_per_batch(vocab_size: int | None, length: int, requested: int) -> int:
  """`requested`, lowered so one batch's float32 logits stay under 512 MiB (large vocabularies)."""
  if not vocab_size:
    return requested
  return max(1, min(requested, _LOGITS_BUDGET_BYTES // (length * vocab_size * 4)))


@functools.partial(jax.jit, static_argnums=0)
def _target_log_probs(module, params, ids, mask, targets):
  """Natural-log p(target) [B, T]; the [B, T, V] logits never leave the device (a 151k vocabulary would
  make them gigabytes). Jitted once per module."""
  logits = module.apply({"params": params}, input_ids=ids, attention_mask=mask).logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def start_token_id(tokenizer, config=None) -> int | None:
  """The token each causal window starts with (see module docstring); None if the tokenizer has none."""
  tokenizer = _tokenizer(tokenizer)
  for candidate in (tokenizer.roles.get("bos"), getattr(config, "bos_token_id", None), tokenizer.roles.get("eos")):
    if candidate is not None:
      return int(candidate)
  return tokenizer.backend.token_to_id("<|endoftext|>")


def lm_eval_batches(
  tokenizer,
  texts: Sequence[str],
  max_length: int = 1024,
  batch_size: int = 8,
  start_id: int | None = None,
  vocab_size: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Right-padded batches of windows, exactly as `causal_lm_bits_per_byte` scores them.

  Args:
    start_id: the start token (`start_token_id`); None: windows have none and their first token is unscored.
    vocab_size: if given, rows per batch are lowered so one batch's float32 logits stay under 512 MiB.

  Yields:
    dicts of int32 [rows, T] arrays: input_ids, attention_mask, targets (the next token at each position)
    and target_mask (1 where that next token is scored). T is a multiple of 32 (at most max_length).
  """
  if max_length < 2:
    raise EvalInputError("max_length must be at least 2 (start token + one token)")
  prefix = [] if start_id is None else [start_id]
  step = max_length - len(prefix)
  windows = []
  for ids in _tokenizer(tokenizer).encode_batch(list(texts)):
    windows += [prefix + list(ids[first : first + step]) for first in range(0, len(ids), step)]
  batch_size = _rows_per_batch(vocab_size, max_length, batch_size)
  for first in range(0, len(windows), batch_size):
    group = windows[first : first + batch_size]
    length = min(max_length, -(-max(len(w) for w in group) // _LENGTH_BUCKET) * _LENGTH_BUCKET)
    input_ids = np.zeros((batch_size, length), np.int32)
    attention_mask = np.zeros((batch_size, length), np.int32)
    for row, window in enumerate(group):
      input_ids[row, : len(window)] = window
      attention_mask[row, : len(window)] = 1
    # Position t predicts token t+1; the last column's target is a dummy (masked out).
    targets = np.concatenate([input_ids[:, 1:], np.zeros((batch_size, 1), np.int32)], axis=1)
    target_mask = np.concatenate([attention_mask[:, 1:], np.zeros((batch_size, 1), np.int32)], axis=1)
    yield {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets, "target_mask": target_mask}


def causal_lm_bits_per_byte(
  model: BaseModel,
  texts: Sequence[str],
  tokenizer=None,
  max_length: int = 1024,
  batch_size: int = 8,
  params: Any = None,
) -> dict[str, float]:
  """Bits per byte of a causal `BaseModel` on `texts` (definition in the module docstring).

  Args:
    model: a `zett.models.base.BaseModel` whose family is causal.
    tokenizer: defaults to `model.tokenizer`.
    params: overrides `model.params` (e.g. with transferred embeddings).

  Returns:
    dict with bits_per_byte, tokens_per_byte, total_bits, num_bytes, num_scored_tokens, num_text_tokens.
  """
  if not model.family.is_causal:
    raise EvalInputError(f"{model.name}: bits per byte here needs a causal LM, got family {model.family.name}")
  tokenizer = _model_tokenizer(model, tokenizer)
  params = model.params if params is None else params
  num_bytes = sum(len(t.encode("utf-8")) for t in texts)
  if num_bytes == 0:
    raise EvalInputError("the evaluation text is empty")
  start_id = start_token_id(tokenizer, model.config)
  total_nats, scored, text_tokens = 0.0, 0, 0
  for batch in lm_eval_batches(
    tokenizer, texts, max_length, batch_size, start_id=start_id, vocab_size=getattr(model.config, "vocab_size", None)
  ):
    log_probs = _target_log_probs(
      model.module, params, *(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "targets"))
    )
    total_nats -= float(jnp.sum(log_probs * batch["target_mask"]))
    scored += int(batch["target_mask"].sum())
    text_tokens += int(batch["attention_mask"].sum()) - (
      0 if start_id is None else int((batch["attention_mask"][:, 0] > 0).sum())
    )
  total_bits = total_nats / math.log(2)
  return {
    "bits_per_byte": total_bits / num_bytes,
    "tokens_per_byte": text_tokens / num_bytes,
    "total_bits": total_bits,
    "num_bytes": num_bytes,
    "num_scored_tokens": scored,
    "num_text_tokens": text_tokens,
  }


def masked_lm_bits_per_byte(
  model: BaseModel,
  texts: Sequence[str],
  tokenizer=None,
  mask_fraction: float = 0.15,
  max_length: int = 512,
  seed: int = 0,
  batch_size: int = 8,
  mask_token_id: int | None = None,
) -> tuple[float, int]:
  """Masked-LM bits per byte on masked positions.

  Definition: each text is tokenized with the model's special tokens and cut into windows of at most
  `max_length` tokens; in each window round(mask_fraction x real tokens) (at least one) non-special
  positions, drawn with `seed`, are all replaced by the mask token and predicted in one forward pass.
  The score is sum over masked positions of -log2 p(original token | masked window) divided by the
  UTF-8 bytes of the text spans those tokens cover (from the tokenizer's offsets; tokens that share one
  character, like the byte pieces of a multi-byte character, split its bytes equally). Because both sides are
  per byte of the *same spans of text*, a model and its transfer to another tokenizer compare directly.

  Returns:
    (bits per byte, number of masked positions).
  """
  tokenizer = _model_tokenizer(model, tokenizer)
  backend = tokenizer.backend
  mask_id = _mask_token_id(tokenizer) if mask_token_id is None else mask_token_id
  rng = np.random.default_rng(seed)
  windows = []  # (ids, masked positions, masked byte count)
  for text in texts:
    encoding = backend.encode(text, add_special_tokens=True)
    ids, special = np.asarray(encoding.ids), np.asarray(encoding.special_tokens_mask)
    token_bytes = _token_byte_counts(text, encoding.offsets)
    for start in range(0, len(ids), max_length):
      stop = min(len(ids), start + max_length)
      candidates = np.flatnonzero(special[start:stop] == 0) + start
      if candidates.size == 0:
        continue
      count = max(1, int(round(mask_fraction * candidates.size)))
      chosen = np.sort(rng.choice(candidates, size=count, replace=False))
      nbytes = float(token_bytes[chosen].sum())
      windows.append((ids[start:stop], chosen - start, nbytes))
  if not windows:
    raise EvalInputError("no text to evaluate (every window was empty)")
  total_bits, total_bytes, total_masked = 0.0, 0, 0
  length = max(len(w[0]) for w in windows)
  batch_size = _rows_per_batch(getattr(model.config, "vocab_size", None), length, batch_size)
  for first in range(0, len(windows), batch_size):
    group = windows[first : first + batch_size]
    ids = np.zeros((batch_size, length), np.int32)
    attention = np.zeros((batch_size, length), np.int32)
    masked_inputs = ids.copy()
    for row, (window_ids, positions, _) in enumerate(group):
      ids[row, : len(window_ids)] = window_ids
      attention[row, : len(window_ids)] = 1
      masked_inputs[row, : len(window_ids)] = window_ids
      masked_inputs[row, positions] = mask_id
    log_probs = np.asarray(
      _target_log_probs(
        model.module, model.params, jnp.asarray(masked_inputs), jnp.asarray(attention), jnp.asarray(ids)
      )
    )
    for row, (_, positions, nbytes) in enumerate(group):
      total_bits -= float(log_probs[row, positions].sum()) / math.log(2)
      total_bytes += nbytes
      total_masked += len(positions)
  return total_bits / max(total_bytes, 1), total_masked
