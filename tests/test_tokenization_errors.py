"""Bad input gives one clear TokenizerError naming the file and the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from zett.tokenization import SurfaceEncoder, TokenizerError, load_tokenizer, surface_forms


def _byte_level_bpe(vocab: dict[str, int], merges=()) -> tokenizers.Tokenizer:
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  return backend


def test_corrupt_tokenizer_json(tmp_path):
  path = tmp_path / "tokenizer.json"
  path.write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
  with pytest.raises(TokenizerError, match="tokenizer.json: not a valid tokenizer.json"):
    load_tokenizer(path)
  with pytest.raises(TokenizerError, match=str(tmp_path)):
    load_tokenizer(tmp_path)


def test_empty_vocabulary(tmp_path):
  _byte_level_bpe({}).save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(TokenizerError, match="vocabulary is empty"):
    load_tokenizer(tmp_path / "tokenizer.json")


def test_unsupported_model_type(tmp_path):
  backend = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
  backend.save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(TokenizerError, match="unsupported tokenizer model type 'WordLevel'"):
    load_tokenizer(tmp_path / "tokenizer.json")


def test_missing_and_unrecognised_files(tmp_path):
  with pytest.raises(TokenizerError, match="no such file"):
    load_tokenizer(tmp_path / "nope.json")
  (tmp_path / "weights.bin").write_bytes(b"\0\1")
  with pytest.raises(TokenizerError, match="unrecognised tokenizer file"):
    load_tokenizer(tmp_path / "weights.bin")
  (tmp_path / "empty").mkdir()
  with pytest.raises(TokenizerError, match="no tokenizer.json or SentencePiece model"):
    load_tokenizer(tmp_path / "empty")


def test_corrupt_sentencepiece_tiktoken_tekken_gguf(tmp_path):
  (tmp_path / "bad.model").write_bytes(b"\xff\xfe not a protobuf \x00\x01")
  with pytest.raises(TokenizerError, match="bad.model: not a SentencePiece model"):
    load_tokenizer(tmp_path / "bad.model")
  (tmp_path / "bad.tiktoken").write_text("IQ== 0\nnot-base64!! 1\n")
  with pytest.raises(TokenizerError, match="bad.tiktoken: line 2"):
    load_tokenizer(tmp_path / "bad.tiktoken")
  (tmp_path / "gappy.tiktoken").write_text("IQ== 0\nIg== 5\n")
  with pytest.raises(TokenizerError, match="without gaps"):
    load_tokenizer(tmp_path / "gappy.tiktoken")
  (tmp_path / "tekken.json").write_text(json.dumps({"config": {"pattern": "x"}, "vocab": []}))
  with pytest.raises(TokenizerError, match="not a tekken tokenizer file"):
    load_tokenizer(tmp_path / "tekken.json")
  (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 16)
  with pytest.raises(TokenizerError, match="bad.gguf"):
    load_tokenizer(tmp_path / "bad.gguf")


def test_gguf_without_tokenizer(tmp_path):
  gguf = pytest.importorskip("gguf")
  writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
  writer.add_block_count(1)
  writer.add_tensor("x", np.zeros(4, dtype=np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(TokenizerError, match="model.gguf"):
    load_tokenizer(tmp_path / "model.gguf")


def test_base_that_cannot_spell_a_byte_says_which(tmp_path):
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  ascii_only = sorted(c for c in alphabet if ord(c) < 128)  # no token for bytes >= 0x80
  base = load_tokenizer(_byte_level_bpe({c: i for i, c in enumerate(ascii_only)}))
  target = load_tokenizer(_byte_level_bpe({c: i for i, c in enumerate(sorted(alphabet))}))
  encoder = SurfaceEncoder(base)
  assert 0xFF in encoder.missing_bytes and 0x41 not in encoder.missing_bytes
  assert encoder.encode_ids([b"AB"]) == [[base.backend.token_to_id("A"), base.backend.token_to_id("B")]]
  with pytest.raises(TokenizerError, match=r"cannot spell byte 0x[89a-f][0-9a-f].*bytes it cannot spell"):
    surface_forms(target, base)
  # With an unk token the same bytes are spelled as unk and counted instead.
  vocab = {c: i for i, c in enumerate(ascii_only)}
  vocab["<unk>"] = len(vocab)
  backend = _byte_level_bpe(vocab)
  backend.add_special_tokens(["<unk>"])
  forms = surface_forms(target, load_tokenizer(backend))
  assert forms.num_unknown == 256 - len(ascii_only)


def test_huge_or_sparse_token_ids_are_refused_before_anything_is_sized_by_them(tmp_path):
  # One token at id 10^9 in a 3-token vocabulary: every table sized by the largest id would take gigabytes.
  _byte_level_bpe({"a": 0, "b": 1, "ab": 10**9}, [("a", "b")]).save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(TokenizerError, match=r"tokenizer.json: token ids must run from 0 to 2.*'ab' has id 1000000000"):
    load_tokenizer(tmp_path / "tokenizer.json")
  with pytest.raises(TokenizerError, match="without gaps"):
    load_tokenizer(tmp_path)  # the folder loader too
  from zett.dynamic.split import vocab_bytes
  with pytest.raises(TokenizerError, match="without gaps"):
    vocab_bytes(tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")))


@pytest.mark.parametrize("content,match", [("{not json", "not a valid JSON file"), ("[1, 2]", "expected a JSON object"),
                                           (b"\xff\xfe", "not a valid JSON file")])
def test_a_malformed_tokenizer_config_names_the_file(tmp_path, content, match):
  _byte_level_bpe({"a": 0, "b": 1}).save(str(tmp_path / "tokenizer.json"))
  side = tmp_path / "tokenizer_config.json"
  side.write_bytes(content if isinstance(content, bytes) else content.encode())
  for spec in (tmp_path, tmp_path / "tokenizer.json"):
    with pytest.raises(TokenizerError, match=f"tokenizer_config.json: {match}"):
      load_tokenizer(spec)
