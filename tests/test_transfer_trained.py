"""On a tiny trained setup: the hypernetwork keeps the base's own tokenizer close to the original, and beats
FVT on an unseen tokenizer (bits per byte on held-out text).

Setup (about 2 minutes on a loaded 2-core CPU): the random `tiny-llama` base of `configs/tiny.yaml` is first
pretrained briefly on standard-library source so that it knows something, saved as a Hugging Face folder,
and a hypernetwork is trained for it with `train.loop.train` and `configs/tiny.yaml` (data: the `json`
package). Held-out text (`pprint.py`) and the unseen target tokenizer (a BPE trained on `argparse.py`) are
seen by neither.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.slow

_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _pretrain(base, steps: int = 400, batch: int = 16, length: int = 64, seed: int = 0):
  import optax
  from train.tiny_base import stdlib_text
  ids = np.asarray(base.tokenizer.encode(stdlib_text()), np.int32)
  optimizer = optax.adamw(3e-3, weight_decay=0.0)

  def loss_fn(params, tokens):
    logits = base.module.apply({"params": params}, input_ids=tokens[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  @jax.jit
  def step(params, state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  params = jax.tree_util.tree_map(jnp.asarray, base.params)
  state = optimizer.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    starts = rng.integers(0, len(ids) - length - 1, batch)
    params, state, loss = step(params, state, jnp.asarray(np.stack([ids[s:s + length + 1] for s in starts])))
  assert float(loss) < 3.0, f"pretraining did not converge (loss {float(loss):.2f})"
  return dataclasses.replace(base, params=jax.device_get(params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from train.config import load_train_config
  from train.loop import train
  from train.tiny_base import stdlib_text, tiny_base
  from zett.interop.hf import save_pretrained
  from zett.models.load import load_model
  from zett.transfer_vocab import to_transformers
  root = tmp_path_factory.mktemp("trained")
  base = _pretrain(tiny_base(hidden_size=64))
  save_pretrained(dataclasses.replace(base, tokenizer=to_transformers(base.tokenizer)), root / "base")
  config = load_train_config(_CONFIG, [
      f"model.base={root / 'base'}", f"run_dir={root / 'run'}", "num_train_steps=100", "eval.every_steps=0",
      "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.save_every_steps=1000"])
  summary = train(config, log=lambda _: None)
  heldout = [stdlib_text(("pprint.py",))[:20000]]
  return load_model(root / "base"), summary["hypernet_dir"], heldout


def _bpb(models, texts):
  from zett.eval_report import evaluate_models, format_table
  results = evaluate_models(models, texts)
  print(format_table(results))
  return {r.label: r.bits_per_byte for r in results}


def test_hypernetwork_to_own_tokenizer_stays_close_to_the_original(trained):
  from zett.transfer import transfer
  base, hypernet, heldout = trained
  own = transfer(base, base.tokenizer, hypernet=hypernet, progress=False)
  bpb = _bpb([("original", base), ("hypernet-own", own)], heldout)
  assert abs(bpb["hypernet-own"] - bpb["original"]) < 0.1 * bpb["original"]


def test_hypernetwork_beats_fvt_on_an_unseen_tokenizer(trained):
  from tests.transfer_setup import train_bpe
  from zett.transfer import transfer
  base, hypernet, heldout = trained
  target = train_bpe(1024, ("argparse.py",))
  bpb = _bpb([("original", base), ("fvt", transfer(base, target, method="fvt", progress=False)),
              ("hypernet", transfer(base, target, hypernet=hypernet, progress=False))], heldout)
  assert bpb["hypernet"] < bpb["fvt"]
