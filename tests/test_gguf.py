"""GGUF loading: tiny written GGUFs (fast) and the embedded SmolLM2-135M against transformers (slow)."""

import hashlib

import jax
import numpy as np
import pytest

from zett.interop import gguf as zett_gguf
from zett.models import ModelLoadError
from zett.models.load import default_gguf_path
from zett.testing import tiny_llama
from zett.tokenization import Tokenizer

gguf = pytest.importorskip("gguf")

PARAGRAPH = (
    "The history of the lighthouse is a story of people trying to make the sea a little less dangerous. "
    "Early lighthouses were simply fires built on hilltops, and later towers were raised so that the light "
    "could be seen from farther away. In the nineteenth century, new lenses made the beams much brighter, "
    "and keepers lived with their families at the base of the tower, climbing the stairs every evening to "
    "trim the wicks and wind the clockwork that turned the lamp.")
PROMPT = "The capital of France is"


def _llama_cpp_permute(weight, num_heads):
  # llama.cpp's convert_hf_to_gguf.py `permute`, which the loader must undo.
  return weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
      weight.shape)


def _write_tiny_gguf(path, model, architecture="llama", tokenizer=None):
  """`tokenizer`: (tokens, merges) of a GPT-2 style byte-level BPE whose first three tokens are control tokens with
  bos = 1 and eos = 2, written as GGUF tokenizer metadata."""
  config = model.config
  tensors = model.family.params_to_hf(config, model.params)
  writer = gguf.GGUFWriter(str(path), architecture)
  if tokenizer is not None:
    tokens, merges = tokenizer
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
  writer.add_block_count(config.num_hidden_layers)
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(config.num_key_value_heads)
  writer.add_rope_dimension_count(config.head_dim)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_rope_freq_base(config.rope_theta)
  writer.add_vocab_size(config.vocab_size)
  names = {v: k for k, v in zett_gguf._GLOBAL_NAMES.items()}
  for hf_name, array in tensors.items():
    if hf_name in names:
      name = names[hf_name]
    else:
      layer, suffix = hf_name.split(".", 3)[2:]
      name = f"blk.{layer}." + {v: k for k, v in zett_gguf._LAYER_NAMES.items()}[suffix]
    array = np.asarray(array, np.float32)
    if name.endswith("attn_q.weight"):
      array = _llama_cpp_permute(array, config.num_attention_heads)
    elif name.endswith("attn_k.weight"):
      array = _llama_cpp_permute(array, config.num_key_value_heads)
    writer.add_tensor(name, array)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_gguf_loads_with_q_k_unpermuted(tied, tmp_path):
  model = tiny_llama(vocab_size=64, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                     tie_word_embeddings=tied, seed=5)
  path = _write_tiny_gguf(tmp_path / "tiny.gguf", model)
  loaded = zett_gguf.load_gguf(path, load_tokenizer=False)
  assert loaded.config.tie_word_embeddings == tied
  same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), model.params, loaded.params)
  assert all(jax.tree_util.tree_leaves(same))
  assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_gguf_tokenizer_loads_as_a_zett_tokenizer(tmp_path):
  from zett.tokenization import bytes_to_unicode
  tokens = ["<|endoftext|>", "<s>", "</s>", *bytes_to_unicode().values(), "Ġt", "he", "Ġthe"]
  model = tiny_llama(vocab_size=len(tokens), hidden_size=32)
  path = _write_tiny_gguf(tmp_path / "tiny.gguf", model, tokenizer=(tokens, ["Ġ t", "h e", "Ġt he"]))
  loaded = zett_gguf.load_gguf(path)
  assert isinstance(loaded.tokenizer, Tokenizer) and loaded.tokenizer.name == loaded.name == "tiny"
  assert loaded.tokenizer.roles["bos"] == 1 and loaded.tokenizer.roles["eos"] == 2
  assert loaded.tokenizer.encode(" the") == [len(tokens) - 1]
  assert loaded.tokenizer.special_ids == {0, 1, 2}


def test_bad_gguf_files(tmp_path):
  model = tiny_llama(vocab_size=64, hidden_size=32)
  path = _write_tiny_gguf(tmp_path / "tiny.gguf", model)
  data = path.read_bytes()
  for cut in (50, len(data) // 2, len(data) - 64):
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match=r"cut\.gguf: truncated or corrupt GGUF"):
      zett_gguf.load_gguf(tmp_path / "cut.gguf", load_tokenizer=False)
  with pytest.raises(ModelLoadError, match=r"absent\.gguf: no such GGUF file"):
    zett_gguf.load_gguf(tmp_path / "absent.gguf")
  other = _write_tiny_gguf(tmp_path / "other.gguf", model, architecture="falcon")
  with pytest.raises(ModelLoadError, match=r"other\.gguf: GGUF architecture 'falcon' not supported"):
    zett_gguf.load_gguf(other, load_tokenizer=False)


# --- the embedded SmolLM2-135M-Instruct against transformers' own GGUF loader -------------------------------------

@pytest.fixture(scope="module")
def smollm2():
  from zett.models.load import load_model
  try:
    default_gguf_path()
  except ModelLoadError as e:
    pytest.skip(str(e))
  return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2_reference():
  """transformers (PyTorch) model with weights dequantized and un-permuted by transformers' GGUF code."""
  torch = pytest.importorskip("torch")
  import transformers
  path = default_gguf_path()
  try:
    import accelerate  # noqa: F401  (transformers needs it for from_pretrained(gguf_file=...))
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager").eval()
  except ImportError:
    pass
  # The same steps from_pretrained(gguf_file=...) takes, without accelerate's device placement.
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
  reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
  tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=reference)["tensors"]
  result = reference.load_state_dict(tensors, strict=False)
  assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys
  reference.tie_weights()
  return reference


@pytest.mark.slow
def test_smollm2_metadata(smollm2):
  assert smollm2.num_params() == 134_515_008
  assert smollm2.config.tie_word_embeddings and smollm2.config.num_key_value_heads == 3
  assert smollm2.weights_sha256 == hashlib.sha256(default_gguf_path().read_bytes()).hexdigest()
  # The tokenizer transformers converts from the GGUF metadata, as a zett Tokenizer with the roles it names.
  assert isinstance(smollm2.tokenizer, Tokenizer) and smollm2.tokenizer.name == smollm2.name
  pieces = {role: smollm2.tokenizer.id_to_piece[i] for role, i in smollm2.tokenizer.roles.items()}
  assert pieces == {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|im_end|>", "unk": "<|endoftext|>"}
  ids = smollm2.tokenizer.encode(PARAGRAPH)
  assert smollm2.tokenizer.decode(ids) == PARAGRAPH and max(ids) < smollm2.config.vocab_size


@pytest.mark.slow
def test_smollm2_greedy_continuation_matches_transformers(smollm2, smollm2_reference):
  import torch

  from zett.models.decoding import greedy_generate
  ids = smollm2.tokenizer.encode(PROMPT)
  ours = greedy_generate(smollm2, [ids], max_new_tokens=20)[0].tolist()
  with torch.no_grad():
    theirs = smollm2_reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                        max_new_tokens=20, min_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
  assert len(ours) == 20 and ours == theirs


@pytest.mark.slow
def test_smollm2_bits_per_byte_matches_transformers(smollm2, smollm2_reference):
  import torch

  from zett.evaluation import causal_lm_bits_per_byte, lm_eval_batches, start_token_id
  ours = causal_lm_bits_per_byte(smollm2, texts=[PARAGRAPH], max_length=64, batch_size=2)
  assert ours["num_bytes"] == len(PARAGRAPH.encode()) and ours["num_scored_tokens"] > 60
  total_nats = 0.0
  start = start_token_id(smollm2.tokenizer, smollm2.config)
  assert start is not None
  for batch in lm_eval_batches(smollm2.tokenizer, [PARAGRAPH], max_length=64, batch_size=2, start_id=start):
    mask = torch.as_tensor(batch["attention_mask"], dtype=torch.long)
    with torch.no_grad():
      logits = smollm2_reference(input_ids=torch.as_tensor(batch["input_ids"], dtype=torch.long), attention_mask=mask,
                                 position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits.float()
    log_probs = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(batch["targets"], dtype=torch.long)[..., None])
    total_nats -= float((log_probs[..., 0] * torch.as_tensor(batch["target_mask"])).sum())
  reference_bpb = total_nats / np.log(2) / len(PARAGRAPH.encode())
  assert 0.3 < ours["bits_per_byte"] < 3.0
  assert abs(ours["bits_per_byte"] - reference_bpb) < 1e-3
