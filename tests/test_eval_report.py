"""`zett eval` metrics against hand computations on toy models with known probabilities."""

from __future__ import annotations

import dataclasses
import json
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from tests.transfer_setup import base_tokenizer
from zett.eval_report import EvalInputError, evaluate_models, format_table, read_texts, write_bar_chart, write_json
from zett.evaluation import causal_lm_bits_per_byte, masked_lm_bits_per_byte
from zett.models.family import ModelOutput
from zett.models.base import BaseModel

TEXTS = ["def add(a, b):\n    return a + b\n", "x = [i * 2 for i in range(10)]  # Grüße\n"]


class _TableModule(nn.Module):
  """Logits are a row of a fixed table: by the current token (bigram) or the same row everywhere."""
  vocab_size: int
  bigram: bool

  @nn.compact
  def __call__(self, input_ids=None, attention_mask=None, **unused):
    table = self.param("table", nn.initializers.normal(1.0), (self.vocab_size, self.vocab_size))
    logits = table[input_ids] if self.bigram else jnp.broadcast_to(table[0], input_ids.shape + (self.vocab_size,))
    return ModelOutput(logits=logits, hidden_states=None)


def _toy(causal: bool, seed: int = 0) -> BaseModel:
  from zett.models import llama
  tokenizer = base_tokenizer()
  v = base_tokenizer().vocab_size
  table = np.random.default_rng(seed).normal(0, 2, (v, v)).astype(np.float32)
  family = dataclasses.replace(llama.FAMILY, name="toy", is_causal=causal)
  return BaseModel(family=family, config=None, module=_TableModule(v, bigram=causal), params={"table": table},
                   tokenizer=tokenizer, name=f"toy-{'causal' if causal else 'masked'}", weights_sha256="")


def _log2_softmax(row):
  row = row.astype(np.float64)
  return (row - row.max() - np.log(np.exp(row - row.max()).sum())) / math.log(2)


@pytest.mark.parametrize("max_length", [512, 6])
def test_causal_bits_per_byte_matches_hand_computation(max_length):
  model = _toy(causal=True)
  table = model.params["table"]
  bos = base_tokenizer().backend.token_to_id("<s>")
  bits = 0.0
  for text in TEXTS:
    tokens = base_tokenizer().encode(text)
    for start in range(0, len(tokens), max_length - 1):  # each window restarts after BOS
      sequence = [bos] + tokens[start:start + max_length - 1]
      bits -= sum(_log2_softmax(table[p])[n] for p, n in zip(sequence[:-1], sequence[1:]))
  expected = bits / sum(len(t.encode()) for t in TEXTS)
  [result] = evaluate_models([("toy", model)], TEXTS, max_length=max_length, batch_size=3)
  assert result.kind == "causal"
  assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)
  n_tokens = sum(len(base_tokenizer().encode(t)) for t in TEXTS)
  assert result.num_tokens == n_tokens
  assert result.tokens_per_byte == pytest.approx(n_tokens / sum(len(t.encode()) for t in TEXTS))


def test_causal_bits_per_byte_is_the_same_through_any_tokenizer_wrapper():
  model = _toy(causal=True)
  through_zett = causal_lm_bits_per_byte(model, TEXTS, max_length=6, batch_size=2)
  through_transformers = causal_lm_bits_per_byte(model, TEXTS, tokenizer=base_tokenizer().to_transformers(),
                                                 max_length=6, batch_size=2)
  assert through_zett == pytest.approx(through_transformers, rel=1e-6)
  n_tokens = sum(len(base_tokenizer().encode(t)) for t in TEXTS)
  assert through_zett["num_text_tokens"] == through_zett["num_scored_tokens"] == n_tokens
  with pytest.raises(EvalInputError, match="empty"):
    causal_lm_bits_per_byte(model, [""])


def test_masked_lm_bits_per_byte_on_masked_positions_matches_hand_computation():
  model = _toy(causal=False)
  mask_id = base_tokenizer().backend.token_to_id("<pad>")
  model = dataclasses.replace(model, tokenizer=base_tokenizer())
  row = _log2_softmax(model.params["table"][0])
  # mask_fraction=1: every (non-special) token is masked, so the hand sum runs over all tokens and all bytes.
  expected_bits = -sum(row[t] for text in TEXTS for t in base_tokenizer().encode(text))
  bpb, masked = masked_lm_bits_per_byte(model, TEXTS, mask_fraction=1.0, mask_token_id=mask_id)
  assert masked == sum(len(base_tokenizer().encode(t)) for t in TEXTS)
  assert bpb == pytest.approx(expected_bits / sum(len(t.encode()) for t in TEXTS), rel=1e-5)
  # 15%: fewer positions, and the same seed picks the same ones.
  partial, count = masked_lm_bits_per_byte(model, TEXTS, mask_token_id=mask_id, seed=1)
  assert 0 < count < masked
  assert masked_lm_bits_per_byte(model, TEXTS, mask_token_id=mask_id, seed=1) == (partial, count)


def test_relative_length_table_json_and_chart(tmp_path):
  a, b = _toy(causal=True), _toy(causal=True, seed=1)
  results = evaluate_models([("a", a), ("b", b)], TEXTS)
  assert [r.relative_length for r in results] == [1.0, 1.0]
  table = format_table(results)
  assert "bits/byte" in table and table.count("\n") == 3
  data = json.loads(write_json(results, tmp_path / "r.json", text_source="t").read_text())
  assert data["results"][1]["label"] == "b"
  png = write_bar_chart(results, tmp_path / "r.png")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_texts(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("one\n\ntwo\n\n\nthree")
  assert read_texts(str(path)) == ["one", "two", "\nthree"]
  assert read_texts(str(path), max_bytes=2) == ["on"]  # the limit cuts inside a document
  with pytest.raises(EvalInputError, match="no such text file"):
    read_texts(str(tmp_path / "missing.txt"))
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(EvalInputError, match="no text"):
    read_texts(str(tmp_path / "empty.txt"))


def test_a_byte_limit_cuts_inside_a_document_at_a_character_boundary(tmp_path):
  path = tmp_path / "one-paragraph.txt"
  path.write_text("é" * 100_000)  # 200,000 bytes, no blank line: one document
  texts = read_texts(str(path), max_bytes=8001)
  assert texts == ["é" * 4000]  # 8,000 bytes: the 8,001st byte would split a character
  assert read_texts(str(path), max_bytes=None) == ["é" * 100_000]


@pytest.mark.parametrize("content,match", [
    (b"ok\n\n\xff\xfe bad", r"bad.txt: not UTF-8 text \(invalid start byte at byte 4\)"),
    (b"ELF\0\0\1binary", r"bad.txt: binary data, not text \(a NUL byte at offset 3\)"),
])
def test_invalid_utf8_and_binary_text_are_refused(tmp_path, content, match):
  (tmp_path / "bad.txt").write_bytes(content)
  with pytest.raises(ValueError, match=match):
    read_texts(str(tmp_path / "bad.txt"))


def test_jsonl_lines_without_text_name_the_file_and_line(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text('{"text": "fine"}\n\n{"body": "no text"}\n')
  with pytest.raises(ValueError, match=r'docs.jsonl: line 3 has no "text" string field'):
    read_texts(str(path))
  path.write_text('{"text": "fine"}\n{"text": \n')
  with pytest.raises(ValueError, match="docs.jsonl: line 2 is not JSON"):
    read_texts(str(path))


def test_a_missing_local_path_is_missing_not_a_failed_download(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "texts").mkdir()
  with pytest.raises(EvalInputError, match="^texts/held_out: no such text file$"):
    read_texts("texts/held_out")
