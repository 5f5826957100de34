"""Measures the tiny config's training step on 1 CPU device in a fresh interpreter; prints one JSON line.

Two measurements (`Device.memory_stats()` is None on the CPU backend):
- "xla": the compiled step's buffer assignment (arguments + temporaries + outputs not aliased to arguments), i.e. what
  the runtime allocates for the step on a device;
- "rss": the process's peak resident memory during the step minus its resident memory just before (sampled every
  0.5 ms and from ru_maxrss), after compilation and with the inputs already in memory.
"""

import json
import os
import resource
import sys
import threading
import time

import jax

from tests._train_helpers import TINY_CONFIG
from zett.train.config import load_train_config
from zett.train.data import TextBatcher
from zett.train.setup import batch_shardings, prepare
from zett.train.vocab import make_sampler

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * _PAGE


def main(run_dir):
  config = load_train_config(TINY_CONFIG, [f"run_dir={run_dir}"])
  run = prepare(config, devices=jax.devices()[:1])
  sampler = make_sampler(config.sampler, run.base_tokenizer, config.hypernet.surface_max_length,
                         config.data.sequence_length, 1, False, [], config.data.batch_size)
  batch = jax.device_put(sampler.sample_batch(TextBatcher(config.data).next_texts(), 0), batch_shardings(run.mesh))
  compiled = run.train_step.lower(run.state, batch, run.base_params).compile()
  stats = compiled.memory_analysis()
  xla = (stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes
         - stats.alias_size_in_bytes)
  before = _rss()
  peak = [before]
  done = threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss())
      time.sleep(0.0005)

  sampler_thread = threading.Thread(target=sample, daemon=True)
  sampler_thread.start()
  state, metrics = compiled(run.state, batch, run.base_params)
  jax.block_until_ready((state, metrics))
  done.set()
  sampler_thread.join()
  max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(json.dumps({"xla": xla, "rss": max(peak[0], max_rss) - before, "temp": stats.temp_size_in_bytes}))


if __name__ == "__main__":
  main(sys.argv[1])
