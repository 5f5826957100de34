"""`zett dynamic`: batch-level BPE on a text file, reporting lengths, cache hit rate and bits per byte.

zett dynamic --model smollm2-135m [--hypernet DIR] --text FILE [--reduction 0.2 | --merges N | --word-level]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from zett.cli._options import add_options, load_options, option
from zett.config import ConfigError, check_ranges


@dataclasses.dataclass(frozen=True)
class DynamicOptions:
  """The model, the text and the merge rule of `zett dynamic`."""

  model: str = "smollm2-135m"
  """Base model: Hugging Face folder, .gguf file or smollm2-135m."""
  hypernet: str | None = None
  """Hypernetwork folder (save_hypernet) or published name; default: a fresh one, i.e. the mean of the subtoken
  embeddings."""
  text: str = option("", required=True)
  """UTF-8 text file; its paragraphs (blank-line separated) are the examples."""
  reduction: float | None = option(low=0, high=1, high_open=True)
  """Merge until the sequences are this much shorter, in [0, 1) (one of reduction, merges, word_level)."""
  merges: int | None = option(low=0, high=1 << 24)
  """Merge budget per batch (one of reduction, merges, word_level)."""
  word_level: bool = False
  """Merge until no pair is left (the default rule)."""
  min_frequency: int = option(1, low=1, high=1 << 31)
  """Never merge pairs rarer than this in a batch."""
  max_token_length: int | None = option(low=0, high=1024)
  """Longest new token in base tokens (default: the hypernetwork's surface length; 0 = no limit)."""
  batch_size: int = option(8, low=1, high=4096)
  """Paragraphs per batch."""
  max_batches: int = option(4, low=1, high=1 << 20)
  """Batches to run."""
  max_length: int = option(256, low=2, high=1 << 20)
  """Base tokens per example (truncated)."""
  prompt_fraction: float = option(0.5, low=0, high=1, low_open=True, high_open=True)
  """Decoders: share of each example prefilled with merged tokens; the rest is scored."""
  cache_size: int = option(8192, low=0, high=1 << 24)
  """Entries of the LRU cache of new-token embeddings."""
  generate: int = option(0, low=0, high=1 << 16)
  """Decoders: greedy tokens to generate after the merged prefill of the first example."""

  def __post_init__(self):
    check_ranges(self)
    rules = [name for name in ("reduction", "merges") if getattr(self, name) is not None]
    if len(rules) + self.word_level > 1:
      given = ", ".join(rules + ["word_level"] * self.word_level)
      raise ConfigError(f"give one of --reduction, --merges and --word-level, not {given}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, DynamicOptions)


def read_paragraphs(path: str | Path) -> list[str]:
  from zett.dynamic.run import DynamicRunError
  from zett.text_files import read_text

  path = Path(path)
  text = read_text(path)  # UTF-8 only, never binary: the same check as every command
  paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
  if not paragraphs:
    raise DynamicRunError(f"{path}: the file has no text")
  return paragraphs


def _describe(rules: dict) -> str:
  shown = {k: v for k, v in rules.items() if not (k == "min_frequency" and v == 1)}
  if "target_reduction" not in shown and "max_merges" not in shown:
    shown["word_level"] = True
  return ", ".join(f"{k}={v}" for k, v in shown.items())


def run(args: argparse.Namespace) -> int:
  from zett.dynamic.run import DynamicEmbedder, evaluate_decoder, evaluate_encoder
  from zett.models.load import load_model

  options: DynamicOptions = load_options(DynamicOptions, args)
  paragraphs = read_paragraphs(options.text)
  rules: dict[str, int | float | None] = {"min_frequency": options.min_frequency}
  if options.reduction is not None:
    rules["target_reduction"] = options.reduction
  if options.merges is not None:
    rules["max_merges"] = options.merges
  if options.max_token_length is not None:
    rules["max_token_length"] = options.max_token_length or None
  model = load_model(options.model)
  embedder = DynamicEmbedder(model, options.hypernet, cache_capacity=options.cache_size)
  is_decoder = bool(model.family.is_causal) and model.family.init_cache is not None
  batch_size = options.batch_size
  batches = [paragraphs[i : i + batch_size] for i in range(0, len(paragraphs), batch_size)]
  batches = batches[: options.max_batches]
  print(
    f"model {model.name}, hypernetwork {options.hypernet or '(fresh: mean of subtokens)'}, "
    f"{len(batches)} batch(es) of up to {batch_size} paragraphs, {_describe(rules)}"
  )
  if is_decoder:
    print(
      f"{'batch':>5} {'prompt base':>11} {'prompt merged':>13} {'reduction':>9} {'new tokens':>10} "
      f"{'bpb base':>8} {'bpb merged':>10}"
    )
  else:
    print(f"{'batch':>5} {'tokens base':>11} {'tokens merged':>13} {'reduction':>9} {'new tokens':>10} {'cosine':>7}")
  totals = [0, 0, 0.0, 0.0, 0]
  for k, texts in enumerate(batches):
    if is_decoder:
      r = evaluate_decoder(
        model,
        embedder,
        texts,
        prompt_fraction=options.prompt_fraction,
        max_length=options.max_length,
        generate_tokens=options.generate if k == 0 else 0,
        **rules,
      )
      print(
        f"{k:>5} {r.prompt_tokens_base:>11} {r.prompt_tokens_merged:>13} {r.prefill_reduction:>9.1%} "
        f"{r.new_tokens:>10} {r.bits_per_byte_base:>8.3f} {r.bits_per_byte_merged:>10.3f}"
      )
      totals = [
        totals[0] + r.prompt_tokens_base,
        totals[1] + r.prompt_tokens_merged,
        totals[2] + r.bits_per_byte_base * r.continuation_bytes,
        totals[3] + r.bits_per_byte_merged * r.continuation_bytes,
        totals[4] + r.continuation_bytes,
      ]
      if k == 0 and options.generate and model.tokenizer is not None:
        decode = model.tokenizer.decode
        print(f"      generated after the merged prefill of example 0: {decode(r.generated_merged_prefill[0])!r}")
    else:
      r = evaluate_encoder(model, embedder, texts, max_length=options.max_length, **rules)
      print(
        f"{k:>5} {r.tokens_base:>11} {r.tokens_merged:>13} {r.reduction:>9.1%} {r.new_tokens:>10} "
        f"{r.mean_pooled_cosine:>7.3f}"
      )
      totals[0] += r.tokens_base
      totals[1] += r.tokens_merged
  print(
    f"total: {totals[0]} -> {totals[1]} tokens ({1 - totals[1] / totals[0]:.1%} shorter), "
    f"cache hit rate {embedder.cache.hit_rate:.1%} ({embedder.cache.hits} hits, {embedder.cache.misses} misses)"
  )
  if is_decoder:
    print(
      f"bits per byte of the continuations: {totals[2] / totals[4]:.4f} after base prefill, "
      f"{totals[3] / totals[4]:.4f} after merged prefill ({totals[3] / totals[4] - totals[2] / totals[4]:+.4f})"
    )
  if embedder.truncated_surface_forms:
    print(
      f"note: {embedder.truncated_surface_forms} new tokens were longer than the hypernetwork's "
      f"{embedder.hypernetwork.config.surface_length} subtokens; it saw their first subtokens only"
    )
  return 0
