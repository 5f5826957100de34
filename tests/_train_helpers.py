"""Shared helpers of the tests/test_train_*.py files: a tiny base that knows something, configs, subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


def pretrained_tiny_base(folder: Path, steps: int = 300, seed: int = 0) -> Path:
  """Trains the "tiny-llama" base itself on standard-library text (next-token) and saves it as a HF folder.

  A random base knows nothing, so "the hypernetwork lowers held-out loss" would be meaningless on it. Cached: a
  folder that already holds a finished base is reused (pytest's base temp dir lives for the session).
  """
  folder = Path(folder)
  if (folder / "DONE").is_file():
    return folder
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from zett.testing.tiny import corpus_text, tiny_base
  from zett.interop.hf import save_pretrained

  base = tiny_base(seed=seed)
  ids = np.asarray(base.tokenizer.encode(corpus_text()), np.int32)
  window, batch = 65, 16
  optimizer = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps, 3e-4))

  def loss_fn(params, tokens):
    logits = base.module.apply({"params": params}, input_ids=tokens[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  @jax.jit
  def step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, opt_state = base.params, optimizer.init(base.params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    starts = rng.integers(0, len(ids) - window, batch)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(np.stack([ids[s:s + window] for s in starts])))
  trained = type(base)(**{**base.__dict__, "params": jax.device_get(params), "name": "tiny-llama-pretrained",
                           "tokenizer": None})
  save_pretrained(trained, folder, tokenizer=None)
  base.tokenizer.to_hf(folder)
  (folder / "DONE").write_text(f"final train loss {float(loss):.4f}\n")
  return folder


def train_unseen_tokenizer(path: Path, vocab_size: int = 700) -> Path:
  """A BPE tokenizer the training never samples: other text (the email package), other vocabulary."""
  from zett.stdlib_source import stdlib_folder
  from zett.testing.bpe import train_byte_level_bpe
  if path.is_file():
    return path
  texts = [p.read_text(encoding="utf-8") for p in sorted((stdlib_folder() / "email").glob("*.py"))]
  backend = train_byte_level_bpe(texts, vocab_size, ["<s>", "</s>"])
  path.parent.mkdir(parents=True, exist_ok=True)
  backend.save(str(path))
  return path


def subprocess_env(**extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TOKENIZERS_PARALLELISM", "false")
  env.update(extra)
  return env


def zett_train_command(*args: str) -> list[str]:
  return [sys.executable, "-c", "import sys; from zett.cli import main; sys.exit(main(sys.argv[1:]))",
          "train", str(TINY_CONFIG), *args]


def run_python(script: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)
