"""The hypernetwork zett ships for SmolLM2-135M: integrity, and that it beats FVT zero-shot.

Zero-shot here: a byte-level BPE trained on Python standard-library modules that the corpus holds out
(`zett data prepare` splits by `train.data.is_heldout` on the normalised text, like this test does), evaluated on
another held-out module. Every figure is computed here; none is stored.
"""

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from zett.hypernet import HypernetCheckpointError, load_hypernetwork
from zett.sha256 import file_sha256
from zett.train.data import is_heldout
from zett import assets
from zett.data.corpus import normalise
from zett.testing.files import flip_byte

NAME = "smollm2-135m"
REPO = Path(__file__).resolve().parent.parent


def test_shipped_weights_match_the_pin_the_manifest_and_their_config():
  folder = assets.shipped_hypernet_path(NAME)
  sha = file_sha256(folder / "hypernet.safetensors")
  manifest = json.loads((REPO / "checkpoints_manifest" / f"{NAME}.json").read_text())
  config_record = json.loads((folder / "config.json").read_text())
  assert sha == assets.SHIPPED_HYPERNETS[NAME] == manifest["hypernet_sha256"] == config_record["weights_sha256"]
  assert (folder / "hypernet.safetensors").stat().st_size < 30 * 2**20
  shipped = load_hypernetwork(NAME)  # by name: the pinned, verified copy
  assert (shipped.sha256, shipped.source) == (sha, NAME)
  assert manifest["tokens_seen"] == sum(leg["tokens"] for leg in manifest["legs"])


def test_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
  copy = tmp_path / "hn"
  shutil.copytree(assets.shipped_hypernet_path(NAME), copy)
  flip_byte(copy / "hypernet.safetensors", -3)
  with pytest.raises(HypernetCheckpointError, match="sha256"):
    load_hypernetwork(copy)
  # A copy replaced together with its config.json still differs from the pin (here: the pin differs from both).
  monkeypatch.setitem(assets.SHIPPED_HYPERNETS, NAME, "0" * 64)
  for spec in (NAME, assets.shipped_hypernet_path(NAME)):
    with pytest.raises(HypernetCheckpointError, match="pinned in zett.assets"):
      load_hypernetwork(spec)


def _heldout_stdlib_modules(count: int, min_bytes: int = 3000) -> list[str]:
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  found = []
  for path in sorted(stdlib.rglob("*.py")):
    if {"site-packages", "dist-packages"} & set(path.parts):  # not part of the corpus
      continue
    try:
      text = normalise(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError):
      continue
    if len(text.encode()) >= min_bytes and is_heldout(text, 20):
      found.append(text)
      if len(found) == count:
        break
  return found


@pytest.mark.slow
def test_shipped_hypernet_beats_fvt_on_a_held_out_tokenizer_and_text():
  from zett.evaluation import causal_lm_bits_per_byte
  from zett.models.load import load_model
  from zett.testing.bpe import train_byte_level_bpe
  from zett.tokenization import load_tokenizer
  from zett.transfer import transfer

  modules = _heldout_stdlib_modules(5)
  assert len(modules) == 5, "the standard library holds out fewer modules than expected"
  bpe = train_byte_level_bpe(modules[:4], 3000, ["<|endoftext|>"])
  target = load_tokenizer(bpe)
  text = [modules[4][:6000]]

  base = load_model("smollm2-135m")
  shipped = assets.shipped_hypernet_for(base)
  assert shipped is not None
  scores = {}
  for label, kwargs in (("fvt", dict(method="fvt")), ("hypernet", dict(hypernet=shipped))):
    model = transfer(base, target, progress=False, **kwargs)
    scores[label] = causal_lm_bits_per_byte(model, text)["bits_per_byte"]
  assert scores["hypernet"] < scores["fvt"], scores
