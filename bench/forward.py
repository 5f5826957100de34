"""Forward throughput: our jitted Flax Llama vs transformers (PyTorch) on SmolLM2-135M, same weights, same run.

  python bench/forward.py            # batch 8 x 256, float32, 3 interleaved timed rounds
  python bench/forward.py --quick    # batch 2 x 128, 2 rounds

Both sides compute full float32 logits [B, T, V]; timings start after warm-up (XLA compile, torch first call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, iterations: int) -> list[float]:
  times = []
  for _ in range(iterations):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="batch 2 x 128, 2 rounds")
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--length", type=int, default=None)
  parser.add_argument("--iterations", type=int, default=None)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  args = parser.parse_args(argv)
  batch = args.batch or (2 if args.quick else 8)
  length = args.length or (128 if args.quick else 256)
  iterations = args.iterations or (2 if args.quick else 3)

  import torch
  import transformers
  from zett.interop.gguf import load_gguf
  from zett.models.load import DEFAULT_MODEL, default_gguf_path, load_model

  dtype = jnp.dtype(args.dtype)
  if args.model == DEFAULT_MODEL:  # skip building the tokenizer: the benchmark feeds random ids
    model = load_gguf(default_gguf_path(), dtype=dtype, param_dtype=dtype, load_tokenizer=False)
  else:
    model = load_model(args.model, dtype=dtype, param_dtype=dtype)
  ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)

  forward = jax.jit(lambda params, ids, mask: model.module.apply({"params": params}, input_ids=ids,
                                                                 attention_mask=mask).logits)
  params = jax.device_put(model.params)
  start = time.perf_counter()
  forward(params, ids, mask).block_until_ready()
  compile_s = time.perf_counter() - start

  # The reference gets exactly our weights through the HF name mapping (what save_pretrained writes).
  torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
  hf_config = transformers.AutoConfig.for_model(**model.family.config_to_hf(model.config))
  reference = transformers.AutoModelForCausalLM.from_config(hf_config).to(torch_dtype).eval()
  state = {k: torch.from_numpy(np.array(v, np.float32)).to(torch_dtype)
           for k, v in model.family.params_to_hf(model.config, model.params).items()}
  reference.load_state_dict(state, strict=False)
  reference.tie_weights()
  torch_ids, torch_mask = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)

  def torch_forward():
    with torch.inference_mode():
      return reference(input_ids=torch_ids, attention_mask=torch_mask).logits.float()

  start = time.perf_counter()
  reference_logits = torch_forward()
  warmup_s = time.perf_counter() - start
  # Interleaved rounds, so both sides see the same drift in machine load (the CPU is shared).
  ours, theirs = [], []
  for _ in range(iterations):
    ours += _time(lambda: forward(params, ids, mask).block_until_ready(), 1)
    theirs += _time(torch_forward, 1)
  max_diff = float(np.abs(np.asarray(forward(params, ids, mask)) - reference_logits.numpy()).max())

  tokens = batch * length
  ours_tps, theirs_tps = tokens / statistics.median(ours), tokens / statistics.median(theirs)
  print(f"SmolLM2-135M forward, batch {batch} x {length}, {args.dtype}, {jax.devices()[0].platform} (JAX) / "
        f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads); median of {iterations} interleaved "
        f"rounds; "
        f"max |logit diff| {max_diff:.2e}")
  print(f"| implementation | warm-up s | median s/batch | tokens/s |")
  print(f"|---|---|---|---|")
  print(f"| zett Flax (jit) | {compile_s:.1f} | {statistics.median(ours):.3f} | {ours_tps:,.0f} |")
  print(f"| transformers PyTorch | {warmup_s:.1f} | {statistics.median(theirs):.3f} | {theirs_tps:,.0f} |")
  print(f"| ratio zett / transformers | | | {ours_tps / theirs_tps:.2f}x |")
  return {"ours_tokens_per_s": ours_tps, "torch_tokens_per_s": theirs_tps, "ratio": ours_tps / theirs_tps}


if __name__ == "__main__":
  main()
