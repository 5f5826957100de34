"""`zett generate`: stream text from a base model with a large vocabulary behind an ANN index.

zett generate --model smollm2-135m --vocab VOCAB_DIR --prompt "def main(" [--exact]
zett generate --model smollm2-135m --vocab VOCAB_DIR --build-from tokenizer.json [--hypernet DIR] --prompt ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zett.cli import float_range, int_range
from zett.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", required=True, help="base model: HF folder, .gguf file, or smollm2-135m")
  parser.add_argument("--vocab", required=True, help="vocabulary directory (from zett.ann.build.build_vocabulary)")
  parser.add_argument("--prompt", required=True, help="prompt text (tokenized with the large vocabulary)")
  parser.add_argument("--max-new-tokens", type=int_range(1, 1 << 16), default=64)
  parser.add_argument("--exact", action="store_true", help="score the whole vocabulary exactly instead of the index")
  parser.add_argument("--temperature", type=float_range(0, 100), default=0.0, help="0 = greedy")
  parser.add_argument(
    "--sample-top-k", type=int_range(1, 1 << 20), default=40, help="sample among this many best tokens"
  )
  parser.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
  parser.add_argument(
    "--candidates", type=int_range(1, 1 << 20), default=None, help="ANN candidates rescored exactly per step"
  )
  parser.add_argument(
    "--build-from",
    default=None,
    help="build --vocab first (or resume/verify it) from this tokenizer (any format load_tokenizer reads)",
  )
  parser.add_argument("--hypernet", default=None, help="hypernetwork checkpoint for --build-from (default: FVT mean)")
  parser.add_argument("--stats", action="store_true", help="print tokens/s and bytes/token to stderr at the end")


def run(args: argparse.Namespace) -> int:
  from zett.ann.build import build_vocabulary
  from zett.ann.generate import LargeVocabGenerator
  from zett.models.load import load_model

  try:
    args.prompt.encode("utf-8")
  except UnicodeEncodeError:  # undecodable bytes on the command line arrive as lone surrogates
    raise UsageError("--prompt is not valid UTF-8 text") from None
  tokenizer = None
  if args.build_from:  # a missing or broken tokenizer fails before the model loads
    from zett.tokenization import load_tokenizer

    tokenizer = load_tokenizer(args.build_from)
  model = load_model(args.model)
  vocab = Path(args.vocab)
  if tokenizer is not None:  # resumes an interrupted build; a finished one is only verified
    build_vocabulary(vocab, model, tokenizer, hypernet=args.hypernet)
  generator = LargeVocabGenerator(model, vocab, load_ann_index=not args.exact, candidates=args.candidates)
  for piece in generator.generate(
    args.prompt,
    args.max_new_tokens,
    exact=args.exact,
    temperature=args.temperature,
    sample_top_k=args.sample_top_k,
    seed=args.seed,
  ):
    sys.stdout.write(piece)
    sys.stdout.flush()
  sys.stdout.write("\n")
  if args.stats:
    stats = generator.stats
    print(
      f"{stats.new_tokens} tokens, {stats.tokens_per_second:.1f} tokens/s, "
      f"{stats.new_bytes / max(stats.new_tokens, 1):.2f} bytes/token, "
      f"selection {1e3 * stats.selection_seconds / max(stats.new_tokens, 1):.2f} ms/token",
      file=sys.stderr,
    )
  return 0
