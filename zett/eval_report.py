"""Comparing models (original and transferred) on the same text: bits per byte, tokens per byte, sequence length.

Metrics (all per UTF-8 byte of the text, so models with different tokenizers compare directly; defined in
`zett.evaluation`):
- causal LMs: bits per byte (`causal_lm_bits_per_byte`).
- masked LMs: *masked-LM bits per byte* (`masked_lm_bits_per_byte`).
- tokens per byte: tokens the model's tokenizer makes from the text (special tokens excluded) / bytes.
- relative length: a model's token count / the first (reference) model's token count.

Output: `format_table` (plain text), `write_json`, `write_bar_chart` (PNG via matplotlib).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zett.evaluation import EvalInputError, causal_lm_bits_per_byte, count_tokens, masked_lm_bits_per_byte
from zett.models.base import BaseModel


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


def evaluate_models(
  models: Sequence[tuple[str, BaseModel]],
  texts: Sequence[str],
  max_length: int = 512,
  batch_size: int = 8,
  seed: int = 0,
) -> list[EvalResult]:
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
      bpb = causal_lm_bits_per_byte(model, texts, max_length=max_length, batch_size=batch_size)["bits_per_byte"]
      kind = "causal"
    else:
      bpb, _ = masked_lm_bits_per_byte(model, texts, max_length=max_length, seed=seed, batch_size=batch_size)
      kind = "masked"
    results.append(EvalResult(label, kind, float(bpb), num_tokens / num_bytes, num_tokens, num_bytes))
  reference = results[0].num_tokens if results else 1
  return [dataclasses.replace(r, relative_length=r.num_tokens / max(reference, 1)) for r in results]


def format_table(results: Sequence[EvalResult | dict]) -> str:
  """A plain-text table, one row per model."""
  rows = [r if isinstance(r, dict) else dataclasses.asdict(r) for r in results]
  header = ["model", "kind", "bits/byte", "tokens/byte", "tokens", "rel. length"]
  body = [
    [
      r["label"],
      r["kind"],
      f"{r['bits_per_byte']:.4f}",
      f"{r['tokens_per_byte']:.4f}",
      f"{r['num_tokens']:,}",
      f"{r['relative_length']:.3f}",
    ]
    for r in rows
  ]
  widths = [max(len(str(x)) for x in column) for column in zip(header, *body)]

  def line(cells) -> str:
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

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
  for axis, values, title in (
    (axes[0], [r.bits_per_byte for r in results], "bits per byte (lower is better)"),
    (axes[1], [r.relative_length for r in results], "relative sequence length"),
  ):
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
  `datasets` name/path (its "text" column), at most `max_bytes` UTF-8 bytes in all (`zett.text_files`)."""
  from zett.interop.hub import could_be_hub_name
  from zett.text_files import cut_to_bytes, read_documents

  path = Path(spec)
  if path.exists():
    out = read_documents(path, max_bytes)
  elif not could_be_hub_name(spec):
    raise EvalInputError(f"{spec}: no such text file")
  else:
    try:
      import datasets

      dataset = datasets.load_dataset(spec, split=split, streaming=True)
      out = cut_to_bytes((row["text"] for row in dataset), max_bytes)
    except Exception as e:  # datasets raises many types; the user needs one message
      raise EvalInputError(f"{spec}: no such local text file, and not a loadable dataset ({e})") from None
  if not out:
    raise EvalInputError(f"{spec}: contains no text")
  return out
