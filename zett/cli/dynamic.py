"""`zett dynamic`: batch-level BPE on a text file, reporting lengths, cache hit rate and bits per byte.

zett dynamic --model smollm2-135m [--hypernet DIR] --text FILE [--reduction 0.2 | --merges N | --word-level]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zett.cli import float_range, int_range
from zett.dynamic.run import DynamicEmbedder, DynamicRunError, evaluate_decoder, evaluate_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--model", default="smollm2-135m", help="base model: HF folder, .gguf file or smollm2-135m (default)"
  )
  parser.add_argument(
    "--hypernet",
    default=None,
    help="hypernetwork folder (save_hypernet); default: a fresh one, i.e. mean of subtoken embeddings",
  )
  parser.add_argument("--text", required=True, help="UTF-8 text file; paragraphs (blank-line separated) are examples")
  rule = parser.add_mutually_exclusive_group()
  rule.add_argument(
    "--reduction",
    type=float_range(0, 1, high_open=True),
    default=None,
    help="target sequence-length reduction in [0, 1)",
  )
  rule.add_argument("--merges", type=int_range(0, 1 << 24), default=None, help="merge budget per batch")
  rule.add_argument("--word-level", action="store_true", help="merge until no pair is left (the default)")
  parser.add_argument(
    "--min-frequency", type=int_range(1, 1 << 31), default=1, help="never merge pairs rarer than this in a batch"
  )
  parser.add_argument(
    "--max-token-length",
    type=int_range(0, 1024),
    default=None,
    help="longest new token in base tokens (default: the hypernetwork's surface length; 0 = no limit)",
  )
  parser.add_argument("--batch-size", type=int_range(1, 4096), default=8, help="paragraphs per batch")
  parser.add_argument("--max-batches", type=int_range(1, 1 << 20), default=4)
  parser.add_argument(
    "--max-length", type=int_range(2, 1 << 20), default=256, help="base tokens per example (truncated)"
  )
  parser.add_argument(
    "--prompt-fraction",
    type=float_range(0, 1, low_open=True, high_open=True),
    default=0.5,
    help="decoders: share of each example prefilled with merged tokens; the rest is scored",
  )
  parser.add_argument(
    "--cache-size", type=int_range(0, 1 << 24), default=8192, help="LRU cache of new-token embeddings"
  )
  parser.add_argument(
    "--generate",
    type=int_range(0, 1 << 16),
    default=0,
    help="decoders: greedy tokens to generate after the merged prefill of the first example",
  )
  parser.add_argument("--debug", action="store_true", help="show tracebacks")


def read_paragraphs(path: str | Path) -> list[str]:
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
  from zett.models.load import load_model

  paragraphs = read_paragraphs(args.text)
  rules = {"min_frequency": args.min_frequency}
  if args.reduction is not None:
    rules["target_reduction"] = args.reduction
  if args.merges is not None:
    rules["max_merges"] = args.merges
  if args.max_token_length is not None:
    rules["max_token_length"] = args.max_token_length or None
  model = load_model(args.model)
  embedder = DynamicEmbedder(model, args.hypernet, cache_capacity=args.cache_size)
  is_decoder = bool(model.family.is_causal) and model.family.init_cache is not None
  batches = [paragraphs[i : i + args.batch_size] for i in range(0, len(paragraphs), args.batch_size)]
  batches = batches[: args.max_batches]
  print(
    f"model {model.name}, hypernetwork {args.hypernet or '(fresh: mean of subtokens)'}, "
    f"{len(batches)} batch(es) of up to {args.batch_size} paragraphs, {_describe(rules)}"
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
        prompt_fraction=args.prompt_fraction,
        max_length=args.max_length,
        generate_tokens=args.generate if k == 0 else 0,
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
      if k == 0 and args.generate and model.tokenizer is not None:
        decode = model.tokenizer.decode
        print(f"      generated after the merged prefill of example 0: {decode(r.generated_merged_prefill[0])!r}")
    else:
      r = evaluate_encoder(model, embedder, texts, max_length=args.max_length, **rules)
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
