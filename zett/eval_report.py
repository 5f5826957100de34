"""Comparing models (original and transferred) on the same text: bits per byte, tokens per byte, sequence length.

Metrics (all per UTF-8 byte of the text, so models with different tokenizers compare directly):
- causal LMs: bits per byte (total negative log2-likelihood of the text divided by its byte count; see
  `_causal_bits_per_byte` for windows and the start token).
- masked LMs: *masked-LM bits per byte* (defined in `masked_lm_bits_per_byte`).
- tokens per byte: tokens the model's tokenizer makes from the text (special tokens excluded) / bytes.
- relative length: a model's token count / the first (reference) model's token count.

Output: `format_table` (plain text), `write_json`, `write_bar_chart` (PNG via matplotlib).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zett.models.load import BaseModel


class EvalInputError(ValueError):
  """Evaluation input (text file, dataset, model) that cannot be used."""


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """One model's scores on one text."""
  label: str
  kind: str
  """"causal" (bits per byte over all text) or "masked" (masked-LM bits per byte on masked positions)."""
  bits_per_byte: float
  tokens_per_byte: float
  num_tokens: int
  num_bytes: int
  relative_length: float = 1.0
  """num_tokens / the reference (first) model's num_tokens."""


def _backend(tokenizer):
  """The `tokenizers.Tokenizer` behind a zett `Tokenizer`, a transformers fast tokenizer, or itself."""
  for attribute in ("backend", "backend_tokenizer", "_tokenizer"):
    inner = getattr(tokenizer, attribute, None)
    if inner is not None and hasattr(inner, "encode_batch"):
      return inner
  if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab"):
    return tokenizer
  raise EvalInputError(f"{type(tokenizer).__name__}: not a fast (tokenizers-backed) tokenizer")


def count_tokens(tokenizer, texts: Sequence[str]) -> int:
  """Tokens for `texts` without added special tokens."""
  return int(sum(len(e.ids) for e in _backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)))


def _mask_token_id(tokenizer) -> int:
  token_id = getattr(tokenizer, "mask_token_id", None)
  if token_id is not None:
    return int(token_id)
  vocab = _backend(tokenizer).get_vocab(with_added_tokens=True)
  for content in ("<mask>", "[MASK]", "<MASK>"):
    if content in vocab:
      return int(vocab[content])
  raise EvalInputError(f"{getattr(tokenizer, 'name', type(tokenizer).__name__)}: tokenizer has no mask token")


def _token_byte_counts(text: str, offsets) -> np.ndarray:
  """UTF-8 bytes each token covers; tokens sharing one span (byte pieces of one character) split it equally."""
  char_to_byte = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])])
  spans = [(int(char_to_byte[s]), int(char_to_byte[e])) for s, e in offsets]
  sharing: dict[tuple[int, int], int] = {}
  for span in spans:
    sharing[span] = sharing.get(span, 0) + 1
  return np.array([(e - s) / sharing[(s, e)] for s, e in spans], dtype=np.float64)


_LOGITS_BUDGET_BYTES = 1 << 29


def _rows_per_batch(model: BaseModel, length: int, requested: int) -> int:
  """`requested`, lowered so one batch's float32 logits stay under 512 MiB (large vocabularies)."""
  vocab_size = getattr(model.config, "vocab_size", None)
  if not vocab_size:
    return requested
  return max(1, min(requested, _LOGITS_BUDGET_BYTES // (length * vocab_size * 4)))


def _target_log_probs_fn(model: BaseModel):
  """jitted (params, input_ids, attention_mask, target_ids) -> natural-log p(target) [B, T]; the [B, T, V]
  logits never leave the device (a 151k vocabulary would make them gigabytes)."""
  def fn(params, ids, mask, targets):
    logits = model.module.apply({"params": params}, input_ids=ids, attention_mask=mask).logits
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)
  return jax.jit(fn)


def masked_lm_bits_per_byte(model: BaseModel, texts: Sequence[str], tokenizer=None, mask_fraction: float = 0.15,
                            max_length: int = 512, seed: int = 0, batch_size: int = 8,
                            mask_token_id: int | None = None) -> tuple[float, int]:
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
  tokenizer = tokenizer if tokenizer is not None else model.tokenizer
  backend = _backend(tokenizer)
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
  target_log_probs = _target_log_probs_fn(model)
  total_bits, total_bytes, total_masked = 0.0, 0, 0
  length = max(len(w[0]) for w in windows)
  batch_size = _rows_per_batch(model, length, batch_size)
  for first in range(0, len(windows), batch_size):
    group = windows[first:first + batch_size]
    ids = np.zeros((batch_size, length), np.int32)
    attention = np.zeros((batch_size, length), np.int32)
    masked_inputs = ids.copy()
    for row, (window_ids, positions, _) in enumerate(group):
      ids[row, :len(window_ids)] = window_ids
      attention[row, :len(window_ids)] = 1
      masked_inputs[row, :len(window_ids)] = window_ids
      masked_inputs[row, positions] = mask_id
    log_probs = np.asarray(target_log_probs(model.params, jnp.asarray(masked_inputs), jnp.asarray(attention),
                                            jnp.asarray(ids)))
    for row, (_, positions, nbytes) in enumerate(group):
      total_bits -= float(log_probs[row, positions].sum()) / math.log(2)
      total_bytes += nbytes
      total_masked += len(positions)
  return total_bits / max(total_bytes, 1), total_masked


def evaluate_models(models: Sequence[tuple[str, BaseModel]], texts: Sequence[str], max_length: int = 512,
                    batch_size: int = 8, seed: int = 0) -> list[EvalResult]:
  """Scores each (label, model) on the same `texts`; relative length is against the first model."""
  num_bytes = sum(len(t.encode("utf-8")) for t in texts)
  if num_bytes == 0:
    raise EvalInputError("the evaluation text is empty")
  results = []
  for label, model in models:
    if model.tokenizer is None:
      raise EvalInputError(f"{label}: model has no tokenizer to evaluate with")
    num_tokens = count_tokens(model.tokenizer, texts)
    if model.family.is_causal:
      bpb = _causal_bits_per_byte(model, texts, max_length, batch_size)
      kind = "causal"
    else:
      bpb, _ = masked_lm_bits_per_byte(model, texts, max_length=max_length, seed=seed, batch_size=batch_size)
      kind = "masked"
    results.append(EvalResult(label, kind, float(bpb), num_tokens / num_bytes, num_tokens, num_bytes))
  reference = results[0].num_tokens if results else 1
  return [dataclasses.replace(r, relative_length=r.num_tokens / max(reference, 1)) for r in results]


def _bos_id(tokenizer) -> int | None:
  for attribute in ("bos_token_id", "eos_token_id"):
    token_id = getattr(tokenizer, attribute, None)
    if token_id is not None:
      return int(token_id)
  roles = getattr(tokenizer, "roles", {}) or {}
  return roles.get("bos", roles.get("eos"))


def _causal_bits_per_byte(model: BaseModel, texts: Sequence[str], max_length: int, batch_size: int) -> float:
  """Total -log2 p(text) / UTF-8 bytes. Each text is tokenized without special tokens and cut into windows
  of `max_length - 1` tokens; each window is preceded by the tokenizer's BOS (else EOS) token so that its
  first token is scored too (with neither, a window's first token goes unscored)."""
  backend = _backend(model.tokenizer)
  start_id = _bos_id(model.tokenizer)
  windows = []
  step = max_length - 1 if start_id is not None else max_length
  for encoding in backend.encode_batch(list(texts), add_special_tokens=False):
    ids = encoding.ids
    for first in range(0, len(ids), step):
      chunk = ids[first:first + step]
      windows.append(([start_id] if start_id is not None else []) + list(chunk))
  target_log_probs = _target_log_probs_fn(model)
  length = max((len(w) for w in windows), default=1)
  batch_size = _rows_per_batch(model, length, batch_size)
  total_bits = 0.0
  for first in range(0, len(windows), batch_size):
    ids = np.zeros((batch_size, length), np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for row, window in enumerate(windows[first:first + batch_size]):
      ids[row, :len(window)] = window
      mask[row, :len(window)] = 1
    # Position t predicts token t+1; the last column's target is a dummy (masked out).
    targets = np.concatenate([ids[:, 1:], np.zeros((batch_size, 1), np.int32)], axis=1)
    log_probs = np.asarray(target_log_probs(model.params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(targets)))
    total_bits -= float((log_probs[:, :-1] * mask[:, 1:]).sum()) / math.log(2)
  return total_bits / sum(len(t.encode("utf-8")) for t in texts)


def format_table(results: Sequence[EvalResult | dict]) -> str:
  """A plain-text table, one row per model."""
  rows = [r if isinstance(r, dict) else dataclasses.asdict(r) for r in results]
  header = ["model", "kind", "bits/byte", "tokens/byte", "tokens", "rel. length"]
  body = [[r["label"], r["kind"], f"{r['bits_per_byte']:.4f}", f"{r['tokens_per_byte']:.4f}",
           f"{r['num_tokens']:,}", f"{r['relative_length']:.3f}"] for r in rows]
  widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]
  line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths)))
  return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def write_json(results: Sequence[EvalResult], path: str | Path, text_source: str = "", extra: Any = None) -> Path:
  path = Path(path)
  record = {"text": text_source, "results": [dataclasses.asdict(r) for r in results]}
  if extra is not None:
    record["extra"] = extra
  path.write_text(json.dumps(record, indent=2) + "\n")
  return path


def write_bar_chart(results: Sequence[EvalResult], path: str | Path) -> Path:
  """Two bar panels (bits per byte; relative sequence length), one bar per model."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = [r.label for r in results]
  fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(labels) + 3), 3.8))
  for axis, values, title in ((axes[0], [r.bits_per_byte for r in results], "bits per byte (lower is better)"),
                              (axes[1], [r.relative_length for r in results], "relative sequence length")):
    bars = axis.bar(range(len(labels)), values, color="#4c72b0")
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    axis.set_title(title, fontsize=10)
    axis.bar_label(bars, fmt="%.3f", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return Path(path)


def read_texts(spec: str, max_bytes: int | None = None, split: str = "validation") -> list[str]:
  """Texts from a .txt file (documents split at blank lines), a .jsonl file ("text" field), or a
  `datasets` name/path (its "text" column); stops after `max_bytes` UTF-8 bytes if given."""
  path = Path(spec)
  if path.is_file():
    if path.suffix == ".jsonl":
      texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    else:
      texts = [block for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if block.strip()]
  elif path.suffix or str(spec).startswith((".", "/", "~")):
    raise EvalInputError(f"{spec}: no such text file")
  else:
    try:
      import datasets
      dataset = datasets.load_dataset(spec, split=split, streaming=True)
      texts = (row["text"] for row in dataset)
    except Exception as e:  # datasets raises many types; the user needs one message
      raise EvalInputError(f"{spec}: not a text file and not a loadable dataset ({e})") from None
  out, total = [], 0
  for text in texts:
    if max_bytes is not None and total >= max_bytes:
      break
    out.append(text)
    total += len(text.encode("utf-8"))
  if not out:
    raise EvalInputError(f"{spec}: contains no text")
  return out
