"""Seconds to transfer SmolLM2-135M to Qwen's 151k-token vocabulary: hypernetwork vs FVT, same run.

Two hypernetwork shapes: the paper's (3 layers, width 576, 7 subtokens) freshly initialised (its cost does not depend
on its weights), and the one zett ships (3 layers, width 256; the shipped weights when installed). Transfer embeds
rows sorted by surface length, each batch cut to its longest spelling (most Qwen tokens are 1-3 SmolLM2 subtokens
long). Surface forms (spelling every Qwen token in SmolLM2 subtokens) are
shared by all methods and timed once on their own, before the runs.

  python bench/transfer.py            # Qwen 151k vocabulary
  python bench/transfer.py --quick    # Mistral v1 SentencePiece 32k vocabulary instead
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from zett.assets import mistral_tokenizer_path, qwen_tiktoken_path


def _target_spec(quick: bool) -> str:
  if quick:
    return str(mistral_tokenizer_path("tokenizer.model.v1"))
  return str(qwen_tiktoken_path())


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="32k Mistral vocabulary instead of Qwen's 151k")
  parser.add_argument("--base", default="smollm2-135m")
  parser.add_argument("--batch-size", type=int, default=None, help="default: sized to memory")
  args = parser.parse_args()

  import jax
  import numpy as np
  from zett.hypernet import config_for_base, init_hypernet
  from zett.models.load import load_model
  from zett.tokenization import load_tokenizer
  from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH
  from zett.transfer import transfer_with_record
  from zett.transfer_vocab import build_target_vocabulary

  started = time.perf_counter()
  base = load_model(args.base)
  load_seconds = time.perf_counter() - started
  target = load_tokenizer(_target_spec(args.quick))
  started = time.perf_counter()
  build_target_vocabulary(target, base.tokenizer, DEFAULT_SURFACE_LENGTH)  # fills the surface-form cache both runs use
  surface_seconds = time.perf_counter() - started

  from zett.assets import shipped_hypernet_for
  paper = config_for_base(base)  # paper shape: 3 layers, hidden = d, 7 subtokens
  paper_params = init_hypernet(paper, base.embeddings, jax.random.key(0))
  shipped = shipped_hypernet_for(base)
  if shipped is None:
    small = config_for_base(base, hidden_size=256)
    shipped = (small, init_hypernet(small, base.embeddings, jax.random.key(0)))
  num_hypernet_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(paper_params))

  timings = {}
  for label, kwargs in (("FVT", dict(method="fvt")), ("hypernet 576", dict(hypernet=(paper, paper_params))),
                        ("hypernet 256", dict(hypernet=shipped))):
    started = time.perf_counter()
    model, record = transfer_with_record(base, target, batch_size=args.batch_size, progress=False, **kwargs)
    timings[label] = time.perf_counter() - started
    del model

  vocab = record.target_vocab_size
  print(f"base {base.name} (d={base.embeddings.input.shape[1]}, vocab {base.embeddings.input.shape[0]:,}) -> "
        f"{target.name} ({vocab:,} tokens); device {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
  print(f"load base {load_seconds:.1f} s; surface forms (shared, once) {surface_seconds:.1f} s; paper-shape "
        f"hypernetwork {num_hypernet_params / 1e6:.1f}M params; width 256: "
        f"{'initialised' if isinstance(shipped, tuple) else shipped}")
  print(f"{'method':<14}{'seconds':>10}{'tokens/s':>12}")
  for label, seconds in timings.items():
    print(f"{label:<14}{seconds:>10.1f}{vocab / seconds:>12,.0f}")
  print(f"{'ratio hypernet 576 / FVT':<26}{timings['hypernet 576'] / timings['FVT']:>10.2f}x")
  print(f"{'ratio hypernet 256 / FVT':<26}{timings['hypernet 256'] / timings['FVT']:>10.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
