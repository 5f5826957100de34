"""A published-format hypernetwork through the commands that take --hypernet (transfer, dynamic, serve's engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers

from zett.hypernet import load_hypernetwork, predict_jit
from tests.test_published_hypernet import _write_folder
from tests.transfer_setup import base_tokenizer, target_tokenizer, tiny_base
from zett.cli import main
from zett.interop.hf import save_pretrained
from zett.models.load import load_model
from zett.stdlib_source import stdlib_text
from zett.tokenization.byte_level import to_byte_level

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("published")
  base = tiny_base()  # untied Llama, d=32, over a byte-level BPE tokenizer
  save_pretrained(base, root / "base")
  target_tokenizer().to_hf(root / "target")
  layout = dict(n_embd=32, vocab=base_tokenizer().vocab_size, extra=1, hidden=32, inter=48, heads=2, layers=1,
                maxlen=7, pad=base_tokenizer().roles["pad"], untied=True, langs=None, single=False)
  folder = _write_folder(root / "hypernet", layout)
  base_tokenizer().to_hf(folder)
  _add_extra_token(folder / "tokenizer.json")
  (root / "text.txt").write_text(stdlib_text(("shlex.py",))[:3000])
  return root


def _add_extra_token(path):
  """Makes the stored tokenizer what their `convert_to_byte_level` makes: the base ids, then extra tokens (with the
  merges that reach them) after the base vocabulary. The extra token joins the first adjacent pair of base pieces
  in the target vocabulary's spellings that the base lacks, so some target tokens read the fallback row."""
  data = json.loads(path.read_text())
  vocab, model = data["model"]["vocab"], tokenizers.Tokenizer.from_file(str(path)).model
  target = target_tokenizer()
  for token_id, piece_bytes in enumerate(target.vocab_bytes):
    if token_id in target.special_ids:
      continue
    pieces = [t.value for t in model.tokenize(to_byte_level(piece_bytes))]
    pair = next(((a, b) for a, b in zip(pieces, pieces[1:]) if a + b not in vocab), None)
    if pair:
      break
  vocab["".join(pair)] = len(vocab)
  merges = data["model"]["merges"]
  merges.insert(0, list(pair) if merges and isinstance(merges[0], list) else " ".join(pair))
  path.write_text(json.dumps(data))


def _their_surface_forms(folder, target, max_length):
  """`zett.utils.get_surface_form_matrix` of their repository: the byte-level string of each token through the hn
  tokenizer's model, first `max_length` ids."""
  model = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).model
  ids = np.zeros((target.vocab_size, max_length), np.int32)
  lengths = np.zeros(target.vocab_size, np.int32)
  for i, data in enumerate(target.vocab_bytes):
    if i in target.special_ids:
      continue
    row = [t.id for t in model.tokenize(to_byte_level(data))][:max_length]
    ids[i, :len(row)], lengths[i] = row, len(row)
  return ids, lengths


def test_transfer_cli_with_published_hypernetwork(assets, tmp_path):
  out = tmp_path / "out"
  code = main(["transfer", "--base", str(assets / "base"), "--tokenizer", str(assets / "target"), "--out", str(out),
               "--hypernet", str(assets / "hypernet"), "--no-progress"])
  assert code == 0
  record = json.loads((out / "zett_transfer.json").read_text())
  assert record["method"] == "hypernet" and len(record["hypernet_sha256"]) == 64

  base = load_model(assets / "base")
  loaded = load_hypernetwork(assets / "hypernet")
  config, params = loaded.config, loaded.params
  target = target_tokenizer()
  ids, lengths = _their_surface_forms(assets / "hypernet", target, config.surface_length)
  expected = predict_jit(config, params, ids, lengths, base.embeddings)
  got = load_model(out).embeddings
  assert (ids >= base_tokenizer().vocab_size).any()  # some spellings use the extra id (the fallback row)
  ordinary = np.array([i not in target.special_ids for i in range(target.vocab_size)])
  np.testing.assert_allclose(np.asarray(got.input)[ordinary], np.asarray(expected.input)[ordinary], atol=1e-5)
  np.testing.assert_allclose(np.asarray(got.output)[ordinary], np.asarray(expected.output)[ordinary], atol=1e-5)
  # Special tokens keep the base's rows (as their transfer script does).
  eos_target, eos_base = target.roles["eos"], base_tokenizer().roles["eos"]
  np.testing.assert_array_equal(np.asarray(got.input)[eos_target], np.asarray(base.embeddings.input)[eos_base])


def test_transfer_refuses_a_base_of_another_width(assets, tmp_path, capsys):
  wrong = tmp_path / "wrong_base"
  save_pretrained(tiny_base(hidden_size=16), wrong)
  code = main(["transfer", "--base", str(wrong), "--tokenizer", str(assets / "target"), "--out",
               str(tmp_path / "out"), "--hypernet", str(assets / "hypernet"), "--no-progress"])
  assert code != 0
  assert "n_embd is 32" in capsys.readouterr().err


def test_dynamic_cli_and_service_engine_take_a_published_hypernetwork(assets, capsys):
  code = main(["dynamic", "--model", str(assets / "base"), "--hypernet", str(assets / "hypernet"), "--text",
               str(assets / "text.txt"), "--max-batches", "1", "--batch-size", "2", "--max-length", "64"])
  assert code == 0
  from zett.cli.serve import load_engine
  engine = load_engine(str(assets / "base"), str(assets / "hypernet"), cache_size=16)
  rows = engine.predict([b" argparse", b"parser"])
  assert rows.input.shape == (2, 32) and rows.output.shape == (2, 32) and rows.bias is None
  assert np.isfinite(rows.input).all()


def test_generate_builds_a_vocabulary_with_a_published_hypernetwork(assets, tmp_path, capsys):
  argv = ["generate", "--model", str(assets / "base"), "--vocab", str(tmp_path / "v"), "--prompt", "def main(",
          "--max-new-tokens", "3", "--exact", "--build-from", str(assets / "target" / "tokenizer.json"),
          "--hypernet", str(assets / "hypernet")]
  assert main(argv) == 0
  assert capsys.readouterr().out.strip()
