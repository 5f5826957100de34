"""`train(config) -> summary`: the host loop around the jitted step.

Per micro-step: next texts -> a freshly sampled tokenizer encodes them -> static-shape batch over the batch vocabulary
-> device -> `train_step`. The step is dispatched asynchronously, so the host prepares the next batch while the
device computes; the host only waits at logging, evaluation and checkpoint points.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from zett.errors import ZettError
from zett.hypernet.record import Hypernetwork
from zett.hypernet.vocabulary import embed_vocabulary
from zett.train import distributed
from zett.train.batch import build_batch, round_up
from zett.train.checkpoint import StopOnSignal
from zett.train.config import TrainConfig, to_dict
from zett.train.metrics import MetricsWriter, Progress
from zett.train.setup import Run, batch_shardings, prepare
from zett.train.step import bits_per_byte
from zett.train.vocab import EncodedVocabulary, encoded_vocabulary, fixed_vocabularies, make_sampler


def _device_batch(run: Run, batch: dict[str, np.ndarray]):
  # Every process holds the whole (global) batch; each fills only its addressable devices (train.distributed).
  if jax.process_count() > 1:
    return distributed.global_device_batch(batch, batch_shardings(run.mesh))
  return jax.device_put(batch, batch_shardings(run.mesh))


def _eval_sets(run: Run, sampler) -> list[EncodedVocabulary]:
  config = run.config
  sets = []
  if config.eval.include_base_tokenizer:
    sets.append(
      encoded_vocabulary(
        f"base:{run.base_tokenizer.name}", run.base_tokenizer, run.base_tokenizer, run.hypernet_config.surface_length
      )
    )
  sets += fixed_vocabularies(config.eval.heldout_tokenizers, run.base_tokenizer, run.hypernet_config.surface_length)
  sets += [sampler.eval_vocabulary(i) for i in range(config.eval.num_sampled_tokenizers)]
  return sets


def _predict_vocabulary(run: Run, params, batch: dict[str, np.ndarray], chunk_rows: int):
  """Predicted `Embeddings` of all vocabulary rows of `batch`, `chunk_rows` at a time, kept on the device."""
  base = run.spec.base_family.get_embeddings(run.spec.base_config, run.base_params)
  return embed_vocabulary(
    Hypernetwork(run.hypernet_config, params),
    base,
    batch["surface_ids"],
    batch["surface_lengths"],
    batch["special_base_ids"],
    chunk_size=chunk_rows,
    dtype=run.spec.compute_dtype,
    on_device=True,
    vocab_size=int(batch["vocab_size"]),
  )


def evaluate(run: Run, params, texts: list[str], sets: list[EncodedVocabulary]) -> dict[str, float]:
  """Held-out bits per byte under each tokenizer (full vocabulary in the softmax, padding excluded)."""
  config = run.config
  batch_size = config.data.batch_size
  largest = max(s.vocab.size for s in sets)
  # Equal chunks divisible by the mesh; each tokenizer pads its vocabulary only to a whole chunk (a compilation per
  # size: padding every tokenizer to the largest one multiplied the softmax and hypernetwork work several times).
  chunk_rows = round_up(min(config.eval.vocab_chunk_rows, largest), run.mesh.shape["data"])
  texts = texts + [""] * (round_up(len(texts), batch_size) - len(texts))
  results = {}
  for encoded in sets:
    rows = round_up(encoded.vocab.size, chunk_rows)
    nll = target_bytes = 0.0
    predicted = None
    for start in range(0, len(texts), batch_size):
      token_rows = encoded.encode(texts[start : start + batch_size])
      batch = build_batch(encoded.vocab, token_rows, config.data.sequence_length, rows)
      if predicted is None:
        predicted = _predict_vocabulary(run, params, batch, chunk_rows)
      sums = jax.device_get(run.eval_sums(predicted, _device_batch(run, batch), run.base_params))
      nll += float(sums[0])
      target_bytes += float(sums[1])
    results[f"bpb/{encoded.name}"] = bits_per_byte(nll, target_bytes)
  return results


class TrainingDivergedError(ZettError, ValueError):
  """The loss or gradient norm stopped being finite: nothing after the last good checkpoint is saved."""


def _check_finite(pending: list, step: int, checkpointer) -> None:
  """Raises TrainingDivergedError if a step since the last check had a non-finite loss or gradient norm.

  Runs before every save and every metrics flush: a NaN state written over the last good checkpoint (or exported as
  the hypernetwork) would lose the run. Fetching the pending metrics syncs with the device, only at these points.
  """
  for metrics in jax.device_get(pending):
    for name in ("loss", "grad_norm"):
      value = float(metrics[name])
      if not np.isfinite(value):
        latest = checkpointer.latest_step()
        kept = f"step {latest} in {checkpointer.directory}" if latest is not None else "none was saved"
        raise TrainingDivergedError(
          f"training diverged by step {step}: {name} is {value}; stopped without saving (the last good checkpoint "
          f"stays: {kept}). Lower optimizer.learning_rate or set optimizer.max_grad_norm"
        )


def _is_update_boundary(done: int, every: int, accumulation: int) -> bool:
  return every > 0 and done % accumulation == 0 and (done // accumulation) % every == 0


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains a hypernetwork as configured; returns a summary (steps, losses, eval history, paths)."""
  process_index, process_count = jax.process_index(), jax.process_count()
  is_main = process_index == 0
  log = log if is_main else (lambda _: None)
  run = prepare(config, resume, log=log)
  log(f"base: {run.base.name} ({run.base.family.name}, {'causal' if run.spec.causal else 'masked'} LM objective)")
  log(run.report)

  # Multi-process: each process reads its data shards, all see the global batch (one sampled tokenizer per step).
  batcher = distributed.ShardedTextBatcher(config.data, process_index, process_count)
  heldout = list(distributed.heldout_for_all(config.data)) if config.eval.every_steps else []
  if process_count > 1:
    log(distributed.describe_processes())
  sampler = make_sampler(
    config.sampler,
    run.base_tokenizer,
    run.hypernet_config.surface_length,
    config.data.sequence_length,
    run.mesh.shape["data"],
    not run.spec.causal,
    heldout,
    config.data.batch_size,
    hypernet_config=run.hypernet_config,
    encoder_buckets=run.spec.encoder_buckets,
  )
  if run.data_state is not None:
    batcher.set_state(run.data_state["data"])
    sampler.set_state(run.data_state["sampler"])
  eval_sets = _eval_sets(run, sampler) if heldout else []

  run_dir = Path(config.run_dir)
  writer = MetricsWriter(config.metrics_path, config.logging.tensorboard, enabled=is_main)
  accumulation = config.optimizer.grad_accumulation_steps
  start = run.resumed_step or 0
  total = config.num_micro_steps
  state = run.state
  config_record = {"train": to_dict(config), "hypernet": dataclasses.asdict(run.hypernet_config)}
  eval_history: list[dict[str, Any]] = []
  pending: list[Any] = []
  summary: dict[str, Any] = {
    "run_dir": str(run_dir),
    "checkpoint_dir": str(run.checkpointer.directory),
    "start_step": start,
    "stopped_by_signal": False,
  }
  timing = {"host_seconds": 0.0, "tokens": 0, "interval_start": time.perf_counter(), "interval_tokens": 0}
  wall_start = time.perf_counter()

  def run_eval(step: int):
    results = evaluate(run, state.params, heldout, eval_sets)
    eval_history.append({"step": step, **results})
    writer.write("eval", step, results)
    log(f"eval @ {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()))

  def flush(step: int) -> dict[str, float]:
    _check_finite(pending, step, run.checkpointer)
    fetched = jax.device_get(pending)
    pending.clear()
    mean = {k: float(np.mean([m[k] for m in fetched])) for k in ("loss", "lm_loss", "aux_loss", "grad_norm")}
    nll = sum(float(m["nll_sum"]) for m in fetched)
    target_bytes = sum(float(m["target_bytes"]) for m in fetched)
    elapsed = time.perf_counter() - timing["interval_start"]
    values = dict(
      mean,
      train_bpb=bits_per_byte(nll, target_bytes),
      tokens_per_second=timing["interval_tokens"] / max(elapsed, 1e-9),
      host_seconds_per_step=timing["host_seconds"] / max(len(fetched), 1),
      learning_rate=float(_learning_rate(config, step)),
    )
    timing.update(interval_start=time.perf_counter(), interval_tokens=0, host_seconds=0.0)
    writer.write("train", step, values)
    return values

  progress = Progress(total, start, config.logging.progress_bar and is_main)
  last: dict[str, float] = {}
  done = start
  try:
    with StopOnSignal(config.checkpoint.save_on_sigterm) as stop:
      if start == 0 and eval_sets:
        run_eval(0)
      for step in range(start, total):
        host_start = time.perf_counter()
        texts = batcher.next_texts()
        batch = sampler.sample_batch(texts, step)
        device_batch = _device_batch(run, batch)
        timing["host_seconds"] += time.perf_counter() - host_start
        state, metrics = run.train_step(state, device_batch, run.base_params)
        pending.append(metrics)
        tokens = int(batch["attention_mask"].sum())  # the batch is global
        timing["tokens"] += tokens
        timing["interval_tokens"] += tokens
        done = step + 1
        postfix = {}
        if done % config.logging.every_steps == 0 or done == total:
          last = flush(done)
          postfix = {"loss": last["loss"], "tok/s": round(last["tokens_per_second"])}
        progress.update(1, **postfix)
        if eval_sets and (_is_update_boundary(done, config.eval.every_steps, accumulation) or done == total):
          run_eval(done)
        # Saves are collective: every process must take the same branch (time-based saves, SIGTERM on one host).
        save_now, stop_now = distributed.agree_any(run.checkpointer.should_save(done), stop.requested)
        if save_now or stop_now or done == total:
          _check_finite(pending, done, run.checkpointer)
        if save_now or done == total:
          run.checkpointer.save(
            done, state, {"data": batcher.get_state(), "sampler": sampler.get_state()}, config_record
          )
        if stop_now:
          log(f"SIGTERM: saving step {done} and stopping")
          run.checkpointer.save(
            done, state, {"data": batcher.get_state(), "sampler": sampler.get_state()}, config_record
          )
          summary["stopped_by_signal"] = True
          break
  finally:
    progress.close()
    run.checkpointer.close()
    writer.close()

  if pending:
    last = flush(done)
  summary.update(
    steps=done,
    final=last,
    eval=eval_history,
    wall_seconds=time.perf_counter() - wall_start,
    tokens=timing["tokens"],
    params=state.params,
    hypernet_config=run.hypernet_config,
  )
  # A finished run, or one stopped by SIGTERM, leaves its latest hypernetwork exported beside its checkpoints.
  export = done == total or summary["stopped_by_signal"]
  host_params = distributed.to_host(state.params) if export else None  # collective: all processes
  if export and is_main:
    from zett.hypernet.io import save_hypernet

    summary["hypernet_dir"] = str(save_hypernet(run_dir / "hypernet", run.hypernet_config, host_params))
    log(f"saved the hypernetwork to {summary['hypernet_dir']}")
  return summary


def _learning_rate(config: TrainConfig, micro_step: int) -> float:
  from zett.train.state import learning_rate_schedule

  schedule = learning_rate_schedule(config.optimizer, config.num_train_steps)
  # optax types a schedule's value as any ArrayLike, complex numbers included; a learning rate is a real scalar.
  return float(schedule(micro_step // config.optimizer.grad_accumulation_steps))  # pyright: ignore[reportArgumentType]
