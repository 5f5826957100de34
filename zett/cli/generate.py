"""`zett generate`: stream text from a base model with a large vocabulary behind an ANN index.

zett generate --model smollm2-135m --vocab VOCAB_DIR --prompt "def main(" [--exact]
zett generate --model smollm2-135m --vocab VOCAB_DIR --build-from tokenizer.json [--hypernet DIR] --prompt ...
              [index.kind=hnsw index.candidates=256 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from zett.ann.index import IndexSpec
from zett.cli._options import add_options, load_options, option
from zett.config import check_ranges
from zett.errors import UsageError


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
  """The model, vocabulary and prompt of `zett generate`, how it picks tokens, and how it builds the vocabulary."""

  model: str = option("", required=True)
  """Base model: Hugging Face folder, .gguf file, or smollm2-135m."""
  vocab: str = option("", required=True)
  """Vocabulary directory (from zett.ann.build.build_vocabulary, or build_from)."""
  prompt: str = option("", required=True)
  """Prompt text (tokenized with the large vocabulary)."""
  max_new_tokens: int = option(64, low=1, high=1 << 16)
  """Tokens to generate."""
  exact: bool = False
  """Score the whole vocabulary exactly instead of through the index."""
  temperature: float = option(0.0, low=0, high=100)
  """Sampling temperature; 0 = greedy."""
  sample_top_k: int = option(40, low=1, high=1 << 20)
  """Sample among this many best tokens."""
  seed: int = option(0, low=0, high=2**32 - 1)
  """Seed of the sampling."""
  candidates: int | None = option(low=1, high=1 << 20)
  """ANN candidates rescored exactly per step (default: the index's own, index.candidates when it was built)."""
  build_from: str | None = None
  """Build the vocabulary first (or resume / verify it) from this tokenizer (any format load_tokenizer reads)."""
  hypernet: str | None = None
  """Hypernetwork for build_from (default: the mean of the subtoken embeddings, FVT)."""
  stats: bool = False
  """Print tokens/s and bytes/token to stderr at the end."""
  index: IndexSpec = IndexSpec()
  """The ANN index build_from builds (zett.ann.index.IndexSpec); an index built from another spec is rebuilt (the
  embeddings are kept)."""

  def __post_init__(self):
    check_ranges(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_options(parser, GenerateOptions)


def run(args: argparse.Namespace) -> int:
  from zett.ann.build import build_vocabulary
  from zett.ann.generate import LargeVocabGenerator
  from zett.models.load import load_model

  options: GenerateOptions = load_options(GenerateOptions, args)
  try:
    options.prompt.encode("utf-8")
  except UnicodeEncodeError:  # undecodable bytes on the command line arrive as lone surrogates
    raise UsageError("--prompt is not valid UTF-8 text") from None
  tokenizer = None
  if options.build_from:  # a missing or broken tokenizer fails before the model loads
    from zett.tokenization import load_tokenizer

    tokenizer = load_tokenizer(options.build_from)
  model = load_model(options.model)
  vocab = Path(options.vocab)
  if (
    tokenizer is not None
  ):  # resumes an interrupted build; a finished one is verified, its index rebuilt if the spec changed
    build_vocabulary(vocab, model, tokenizer, hypernet=options.hypernet, index_spec=options.index)
  generator = LargeVocabGenerator(model, vocab, load_ann_index=not options.exact, candidates=options.candidates)
  for piece in generator.generate(
    options.prompt,
    options.max_new_tokens,
    exact=options.exact,
    temperature=options.temperature,
    sample_top_k=options.sample_top_k,
    seed=options.seed,
  ):
    sys.stdout.write(piece)
    sys.stdout.flush()
  sys.stdout.write("\n")
  if options.stats:
    stats = generator.stats
    print(
      f"{stats.new_tokens} tokens, {stats.tokens_per_second:.1f} tokens/s, "
      f"{stats.new_bytes / max(stats.new_tokens, 1):.2f} bytes/token, "
      f"selection {1e3 * stats.selection_seconds / max(stats.new_tokens, 1):.2f} ms/token",
      file=sys.stderr,
    )
  return 0
