"""The GGUF tokenizer built straight from the file's tokens and merges is the one transformers' converter builds.

zett reads a GGUF's header itself and builds byte-level BPE without transformers (seconds instead of half a
minute); these tests hold it to transformers' own pipelines on the shipped SmolLM2-135M and on tiny written files.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zett.assets import smollm2_gguf_path
from zett.interop import gguf as zett_gguf
from zett.interop.gguf_header import GgufHeaderError, read_gguf_header
from zett.models import ModelLoadError
from zett.testing.multilingual_text import test_lines
from zett.tokenization import TokenizerError, bytes_to_unicode, from_backend, from_transformers, gguf, load_tokenizer

gguf_package = pytest.importorskip("gguf")

TEXTS = [
  "def f(x):\n    return x ** 2  # square\n\n\tif a != b:\n\t\tpass\r\n",
  "日本語のテキスト、中文文本。한국어 텍스트",
  "Привет, мир! Съешь же ещё этих мягких французских булок.",
  "emoji 😀🎉👍🏽 flags 🇩🇪 zwj 👨‍👩‍👧 and ✨",
  "   many    spaces\n\n\n\t\t  trailing   ",
  "a  1 b   22\n 333 digits 1234567890 3.14159 1e-5 2024-12-06",
  "<|endoftext|> special <|im_start|>user\nhi<|im_end|>",
  "don't I'll we've THEY'RE",
  "",
  " ",
  "\n",
  "control \x00\x01\x7f and Ġĉ spelled bytes",
  *test_lines(300),
]


def _converter_backend(path):
  """What zett built before it read GGUF headers itself: transformers' converter, unchanged."""
  from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

  architecture, fields, config = get_gguf_tokenizer(str(path))
  backend, _ = convert_gguf_tokenizer(architecture, fields)
  return backend, fields, config


def _llama_cpp_digit_split(backend):
  from tokenizers import pre_tokenizers

  backend.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
  )


def _assert_same_tokenizer(ours, reference):
  assert json.loads(ours.backend.to_str()) == json.loads(reference.backend.to_str())
  assert (ours.kind, ours.special_ids, dict(ours.roles), ours.add_bos) == (
    reference.kind,
    reference.special_ids,
    dict(reference.roles),
    reference.add_bos,
  )
  for add_special_tokens in (False, True):
    ours_ids = ours.encode_batch(TEXTS, add_special_tokens=add_special_tokens)
    assert ours_ids == reference.encode_batch(TEXTS, add_special_tokens=add_special_tokens)
  for ids in ours.encode_batch(TEXTS):
    assert ours.decode(ids) == reference.decode(ids)


@pytest.mark.slow
def test_smollm2_load_tokenizer_is_the_converter_with_llama_cpp_digits(tmp_path, monkeypatch):
  monkeypatch.setenv("ZETT_CACHE_DIR", str(tmp_path))  # build it, do not read an earlier conversion
  path = smollm2_gguf_path()
  ours = load_tokenizer(str(path))
  backend, fields, config = _converter_backend(path)
  _llama_cpp_digit_split(backend)
  roles = {role: fields.get(f"{role}_token_id") for role in ("bos", "eos", "pad", "unk")}
  control = [i for i, kind in enumerate(fields["token_type"]) if kind == 3]
  reference = from_backend(backend, str(path), roles, extra_special=control, add_bos=bool(config.get("add_bos_token")))
  _assert_same_tokenizer(ours, reference)
  assert ours.name == str(path)
  assert ours.backend.encode("a  1").tokens == ["a", "ĠĠ", "1"]  # the digit split


@pytest.mark.slow
def test_smollm2_base_model_tokenizer_is_transformers_auto_tokenizer():
  from transformers import AutoTokenizer

  path = smollm2_gguf_path().resolve()
  zett_gguf._cached_tokenizer.cache_clear()
  ours = zett_gguf.load_gguf_tokenizer(path)
  reference = from_transformers(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), ours.name)
  _assert_same_tokenizer(ours, reference)
  assert ours.name == read_gguf_header(path).metadata["general.name"]


def test_loading_the_smollm2_tokenizer_imports_no_transformers(tmp_path):
  script = (
    "import sys\n"
    "from zett.assets import smollm2_gguf_path\n"
    "from zett.interop.gguf import load_gguf_tokenizer\n"
    "from zett.tokenization import load_tokenizer\n"
    "assert load_tokenizer(str(smollm2_gguf_path())).vocab_size == 49152\n"
    "assert load_gguf_tokenizer(smollm2_gguf_path()).vocab_size == 49152\n"
    "print(sorted(name for name in ('transformers', 'torch') if name in sys.modules))\n"
  )
  env = {"ZETT_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
  assert result.stdout.strip() == "[]"


def _write_tokenizer_gguf(path, tokens, merges, token_types, pre=None):
  writer = gguf_package.GGUFWriter(str(path), "llama")
  writer.add_tokenizer_model("gpt2")
  if pre is not None:
    writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(token_types)
  writer.add_token_merges(merges)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


TINY_TOKENS = ["<|endoftext|>", "<s>", "</s>", *bytes_to_unicode().values(), "Ġt", "he", "Ġthe", "Ġ1", "<think>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ 1"]


@pytest.mark.slow
@pytest.mark.parametrize(
  ("pre", "last_type", "direct"),
  [(None, 1, True), ("smollm", 1, True), ("qwen2", 1, False), (None, 4, False)],
  ids=["default", "smollm", "qwen2-regex", "user-defined-token"],
)
def test_tiny_gguf_tokenizers_match_the_converter(tmp_path, pre, last_type, direct):
  types = [3, 3, 3] + [1] * (len(TINY_TOKENS) - 4) + [last_type]
  path = _write_tokenizer_gguf(tmp_path / "tiny.gguf", TINY_TOKENS, TINY_MERGES, types, pre)
  metadata = read_gguf_header(path).metadata
  assert (gguf.direct_gguf_tokenizer(metadata, "tiny") is not None) == direct
  ours = gguf.load_gguf(path)
  backend, fields, config = _converter_backend(path)
  if pre == "smollm":
    _llama_cpp_digit_split(backend)
  control = [i for i, kind in enumerate(fields["token_type"]) if kind == 3]
  roles = {role: fields.get(f"{role}_token_id") for role in ("bos", "eos", "pad", "unk")}
  reference = from_backend(backend, str(path), roles, extra_special=control, add_bos=bool(config.get("add_bos_token")))
  _assert_same_tokenizer(ours, reference)


def test_cut_or_foreign_files_are_named_errors(tmp_path):
  path = _write_tokenizer_gguf(tmp_path / "tiny.gguf", TINY_TOKENS, TINY_MERGES, [3, 3, 3] + [1] * 261)
  data = path.read_bytes()
  for cut in (10, 30, len(data) // 3, len(data) - 40):
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(GgufHeaderError, match=r"cut\.gguf"):
      read_gguf_header(tmp_path / "cut.gguf")
    with pytest.raises(TokenizerError, match=r"cut\.gguf: cannot read the GGUF tokenizer fields"):
      gguf.load_gguf(tmp_path / "cut.gguf")
    with pytest.raises(ModelLoadError, match=r"cut\.gguf: truncated or corrupt GGUF"):
      zett_gguf.load_gguf_tokenizer(tmp_path / "cut.gguf")
  (tmp_path / "other.gguf").write_bytes(b"GGML" + data[4:])
  with pytest.raises(TokenizerError, match=r"other\.gguf: .*not a GGUF file"):
    gguf.load_gguf(tmp_path / "other.gguf")
