"""One training step, split into its parts, against a plain embedding-tuning step on the same frozen base.

    python bench/train_step.py [--config configs/tiny.yaml] [--steps 20] [--quick] [dotted.overrides ...]

Ours: text -> freshly sampled tokenizer (host) -> host-to-device -> jitted hypernetwork + frozen-base step (device).
With --compare-padded it also times the padded, paper-shaped step this project ran before its CPU recipe, and, for a
recipe whose base products are bfloat16 (`base_matmul_dtype`), the same recipe with float32 products.
Competitor, same run: the classic way to adapt a model to a tokenizer, tuning the base's own embedding matrices with
Adam on the same text under the base tokenizer (same base forward/backward, no sampling, no hypernetwork).
On an accelerator it also prints model FLOP utilisation from XLA's FLOP count of the compiled step. That count takes
the body of a loop once, and the base's layers run as one scanned layer (`nn.scan`): for a 30-layer base the count,
and the utilisation derived from it, are lower bounds, far below the real figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zett.train.config import load_train_config
from zett.train.data import TextBatcher
from zett.train.loop import _device_batch
from zett.train.setup import base_matmul_dtype, prepare
from zett.train.vocab import make_sampler

# Dense bf16 / fp32 peak FLOP/s by device kind, for MFU (tensor-core bf16; fp32 without TF32).
_PEAK_FLOPS = {"H100": (989e12, 67e12), "H200": (989e12, 67e12), "A100": (312e12, 19.5e12)}


def _peak_flops(compute_dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  for name, (bf16, fp32) in _PEAK_FLOPS.items():
    if name in kind:
      return bf16 if compute_dtype == "bfloat16" else fp32
  return None


def _median_ms(values):
  return 1000 * statistics.median(values)


def bench_ours(run, config, steps: int):
  batcher = TextBatcher(config.data)
  sampler = make_sampler(config.sampler, run.base_tokenizer, run.hypernet_config.surface_length,
                         config.data.sequence_length, run.mesh.shape["data"], not run.spec.causal, [],
                         config.data.batch_size,
                         hypernet_config=run.hypernet_config, encoder_buckets=run.spec.encoder_buckets)
  state, parts, tokens = run.state, {"text": [], "sampling": [], "host_to_device": [], "device_step": []}, []
  for step in range(steps + 2):  # the first two compile / warm up
    t0 = time.perf_counter()
    texts = batcher.next_texts()
    t1 = time.perf_counter()
    batch = sampler.sample_batch(texts, step)
    t2 = time.perf_counter()
    device_batch = jax.block_until_ready(_device_batch(run, batch))
    t3 = time.perf_counter()
    state, metrics = run.train_step(state, device_batch, run.base_params)
    jax.block_until_ready(metrics["loss"])
    t4 = time.perf_counter()
    if step >= 2:
      for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        parts[key].append(value)
      tokens.append(int(batch["attention_mask"].sum()))
  flops = None
  try:
    cost = run.train_step.lower(state, device_batch, run.base_params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) or None
  except Exception:  # cost analysis is best effort on some backends
    pass
  return parts, statistics.mean(tokens), flops, batch


def bench_embedding_tuning(run, config, steps: int):
  """Adam on the base's own embedding matrices, base tokenizer, same text and sequence shape."""
  base = run.base
  embeddings = base.family.get_embeddings(base.config, run.base_params)
  trainable = {"input": embeddings.input, "output": embeddings.output if embeddings.output is not None
               else embeddings.input}
  optimizer = optax.adamw(1e-4)
  opt_state = optimizer.init(trainable)

  def loss_fn(tables, ids, mask):
    out = base.module.apply({"params": run.base_params}, inputs_embeds=jnp.take(tables["input"], ids, axis=0),
                            attention_mask=mask, output_embeddings=tables["output"], output_bias=embeddings.bias)
    nll = optax.softmax_cross_entropy_with_integer_labels(out.logits[:, :-1], ids[:, 1:])
    weights = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)

  @jax.jit
  def step(tables, opt_state, ids, mask):
    loss, grads = jax.value_and_grad(loss_fn)(tables, ids, mask)
    updates, opt_state = optimizer.update(grads, opt_state, tables)
    return optax.apply_updates(tables, updates), opt_state, loss

  batcher = TextBatcher(config.data)
  length = config.data.sequence_length
  times = []
  for i in range(steps + 2):
    rows = run.base_tokenizer.encode_batch(batcher.next_texts())
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for r, row in enumerate(rows):
      row = row[:length]
      ids[r, :len(row)], mask[r, :len(row)] = row, 1
    t0 = time.perf_counter()
    trainable, opt_state, loss = step(trainable, opt_state, ids, mask)
    jax.block_until_ready(loss)
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return times


# "Before": the paper-shaped padded step as it ran before the CPU recipe (hidden = base width, every batch-vocabulary
# row through the encoder at all 7 positions, base tokens predicted too, pulled back by the auxiliary loss).
PADDED_RECIPE = ("configs/smollm2-135m.yaml", ["data.batch_size=8", "sampler.batch_vocab_size=2048",
                                               "model.param_dtype=float32", "model.compute_dtype=float32",
                                               "hypernet.options.keep_base_tokens=false"])


def _measure(config_path: str, overrides: list[str], steps: int, with_baseline: bool):
  with tempfile.TemporaryDirectory() as tmp:
    config = load_train_config(config_path, [f"run_dir={tmp}", "logging.progress_bar=false", *overrides])
    run = prepare(config)
    parts, tokens, flops, _ = bench_ours(run, config, steps)
    baseline = bench_embedding_tuning(run, config, steps) if with_baseline else None
  return config, parts, tokens, flops, baseline


def _print_parts(label: str, config, parts, tokens, flops) -> float:
  ms = {key: _median_ms(values) for key, values in parts.items()}
  total = sum(ms.values())
  print(f"{label}: batch {config.data.batch_size} x {config.data.sequence_length}, batch vocabulary "
        f"{config.sampler.batch_vocab_size or config.sampler.vocab_size}, hypernet width "
        f"{config.hypernet.options.get('hidden_size', 'base')}, buckets {list(config.hypernet.encoder_buckets) or 'none'}")
  print(f"{'  part':<38}{'median ms':>12}{'share':>8}")
  for key, value in ms.items():
    print(f"{'  ' + key:<38}{value:>12.2f}{value / total:>8.0%}")
  print(f"{'  whole step':<38}{total:>12.2f}{tokens / (total / 1000):>14,.0f} tok/s")
  if flops:
    seconds = ms["device_step"] / 1000
    peak = _peak_flops(config.model.compute_dtype)
    device = jax.devices()[0]
    mfu = f", MFU {flops / seconds / peak:.1%}" if peak and device.platform != "cpu" else ""
    print(f"{'  step FLOPs (XLA; one scanned layer)':<38}{flops / 1e9:>12.2f} GFLOP{flops / seconds / 1e12:>8.2f} "
          f"TFLOP/s{mfu}")
  return tokens / (total / 1000)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/tiny.yaml")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--quick", action="store_true", help="5 timed steps")
  parser.add_argument("--compare-padded", action="store_true",
                      help="also time the padded paper-shaped SmolLM2 step (before the CPU recipe) in this run")
  parser.add_argument("overrides", nargs="*")
  args = parser.parse_args(argv)
  steps = 5 if args.quick else args.steps
  print(f"device {jax.devices()[0].device_kind}, {steps} timed steps")
  before = None
  if args.compare_padded:
    config, parts, tokens, flops, _ = _measure(*PADDED_RECIPE, steps, with_baseline=False)
    before = _print_parts(f"before ({PADDED_RECIPE[0]}, padded)", config, parts, tokens, flops)
  float32_products = None
  if args.compare_padded and base_matmul_dtype(load_train_config(args.config, args.overrides)) == "bfloat16":
    config, parts, tokens, flops, _ = _measure(args.config, [*args.overrides, "base_matmul_dtype=null"], steps, False)
    float32_products = _print_parts(f"ours, float32 products ({args.config})", config, parts, tokens, flops)
  config, parts, tokens, flops, baseline = _measure(args.config, args.overrides, steps, with_baseline=True)
  ours = _print_parts(f"ours ({args.config}, base products in {base_matmul_dtype(config) or 'compute dtype'})",
                      config, parts, tokens, flops)
  base_ms = _median_ms(baseline)
  print(f"{'embedding tuning: device step':<38}{base_ms:>12.2f}{tokens / (base_ms / 1000):>14,.0f} tok/s")
  print(f"{'ratio (ours tok/s / embedding tuning tok/s)':<44}{ours / (tokens / (base_ms / 1000)):>6.2f}x")
  if float32_products is not None:
    print(f"{'ratio (ours tok/s / float32 products tok/s)':<44}{ours / float32_products:>6.2f}x")
  if before is not None:
    print(f"{'ratio (ours tok/s / before tok/s)':<44}{ours / before:>6.2f}x")


if __name__ == "__main__":
  main()
