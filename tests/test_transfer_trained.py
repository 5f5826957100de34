"""On a tiny trained setup: the hypernetwork keeps the base's own tokenizer close to the original, and beats
FVT on an unseen tokenizer (bits per byte on held-out text).

Setup (about 2 minutes on a loaded 2-core CPU): the random `tiny-llama` base of `configs/tiny.yaml` is first
pretrained briefly on standard-library source so that it knows something, saved as a Hugging Face folder,
and a hypernetwork is trained for it with `train.loop.train` and `configs/tiny.yaml` (data: the `json`
package). Held-out text (`pprint.py`) and the unseen target tokenizer (a BPE trained on `argparse.py`) are
seen by neither.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._train_helpers import pretrained_tiny_base

pytestmark = pytest.mark.slow

_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from zett.train.config import load_train_config
  from zett.train.loop import train
  from zett.stdlib_source import stdlib_text
  from zett.models.load import load_model
  root = tmp_path_factory.mktemp("trained")
  # The same pretrained tiny base as the training tests (built once per session).
  base_dir = pretrained_tiny_base(tmp_path_factory.getbasetemp() / "train-tiny-base")
  config = load_train_config(_CONFIG, [
      f"model.base={base_dir}", f"run_dir={root / 'run'}", "num_train_steps=100", "eval.every_steps=0",
      "logging.progress_bar=false", "logging.tensorboard=false", "checkpoint.save_every_steps=1000"])
  summary = train(config, log=lambda _: None)
  heldout = [stdlib_text(("pprint.py",))[:20000]]
  return load_model(base_dir), summary["hypernet_dir"], heldout


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
