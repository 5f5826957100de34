"""One process of a test run (see test_distributed.py): `MODE RUN_DIR [--coordinator A --num-processes N --process-id I]`.

MODE "train" trains the tiny config from scratch, "resume" continues RUN_DIR's latest checkpoint. XLA_FLAGS (device
count) comes from the environment. Prints one JSON line: the per-step training losses this process saw.
"""

import argparse
import json
import sys

OVERRIDES = ["num_train_steps=6", "data.shards=2", "data.batch_size=8", "logging.every_steps=1",
             "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.save_every_steps=3",
             "eval.every_steps=3", "optimizer.schedule=constant", "optimizer.warmup_steps=2"]


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("mode", choices=("train", "resume"))
  parser.add_argument("run_dir")
  parser.add_argument("--coordinator")
  parser.add_argument("--num-processes", type=int)
  parser.add_argument("--process-id", type=int)
  parser.add_argument("--timeout", type=int, default=60)
  args = parser.parse_args(argv)
  from zett.train import distributed
  distributed.initialize(distributed.options_from(args.coordinator, args.num_processes, args.process_id,
                                                  args.timeout, environ={}))
  import jax
  from tests._train_helpers import TINY_CONFIG
  from zett.train.config import load_train_config
  from zett.train.loop import train
  config = load_train_config(TINY_CONFIG, [f"run_dir={args.run_dir}", *OVERRIDES])
  summary = train(config, resume=args.mode == "resume", log=lambda _: None)
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
                    "steps": summary["steps"], "start": summary["start_step"], "eval": summary["eval"],
                    "hypernet_dir": summary.get("hypernet_dir")}), flush=True)
  if jax.process_count() > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
