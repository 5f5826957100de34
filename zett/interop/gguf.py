"""GGUF (llama.cpp) checkpoints into our Llama family: dequantized to float32 with the `gguf` package.

llama.cpp stores the Q and K projections with rows permuted for its interleaved rotary layout; we undo
that permutation (as `transformers`' GGUF loader does), otherwise logits are silently wrong.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from zett.interop.gguf_header import GgufHeader, GgufHeaderError, read_gguf_header
from zett.models.base import BaseModel, cast_params
from zett.models.family import ModelLoadError, family_for_model_type
from zett.sha256 import file_sha256
from zett.tokenization.gguf import direct_gguf_tokenizer
from zett.tokenization.tokenizer import Tokenizer, from_transformers

_SUPPORTED_ARCHITECTURES = ("llama",)
_LAYER_NAMES = {
  "attn_norm.weight": "input_layernorm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}


def _reader(path: Path):
  import gguf

  if not path.is_file():
    raise ModelLoadError(f"{path}: no such GGUF file")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # GGUFReader reports truncation as assorted numpy ValueErrors/IndexErrors.
    raise ModelLoadError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {e})") from e


def _field(reader, path: Path, key: str, default: Any = ...) -> Any:
  field = reader.fields.get(key)
  if field is None:
    if default is ...:
      raise ModelLoadError(f"{path}: GGUF metadata key {key!r} missing")
    return default
  return field.contents()


def hf_config_from_gguf(reader, path: Path) -> dict[str, Any]:
  """The equivalent Hugging Face config.json dict of a llama-architecture GGUF."""
  arch = _field(reader, path, "general.architecture")
  if arch not in _SUPPORTED_ARCHITECTURES:
    raise ModelLoadError(f"{path}: GGUF architecture {arch!r} not supported (supported: {_SUPPORTED_ARCHITECTURES})")
  tensor_names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in tensor_names or _field(reader, path, f"{arch}.rope.scaling.type", "none") != "none":
    raise ModelLoadError(f"{path}: GGUF rope scaling is not supported")
  heads = int(_field(reader, path, f"{arch}.attention.head_count"))
  hidden = int(_field(reader, path, f"{arch}.embedding_length"))
  tokens = _field(reader, path, "tokenizer.ggml.tokens", None)
  vocab_size = _field(reader, path, f"{arch}.vocab_size", None) or (len(tokens) if tokens is not None else None)
  if vocab_size is None:
    raise ModelLoadError(f"{path}: GGUF has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
  return {
    "model_type": "llama",
    "vocab_size": int(vocab_size),
    "hidden_size": hidden,
    "intermediate_size": int(_field(reader, path, f"{arch}.feed_forward_length")),
    "num_hidden_layers": int(_field(reader, path, f"{arch}.block_count")),
    "num_attention_heads": heads,
    "num_key_value_heads": int(_field(reader, path, f"{arch}.attention.head_count_kv", heads)),
    "head_dim": int(_field(reader, path, f"{arch}.rope.dimension_count", hidden // heads)),
    "rms_norm_eps": float(_field(reader, path, f"{arch}.attention.layer_norm_rms_epsilon")),
    "rope_theta": float(_field(reader, path, f"{arch}.rope.freq_base", 10000.0)),
    "max_position_embeddings": int(_field(reader, path, f"{arch}.context_length", 2048)),
    "tie_word_embeddings": "output.weight" not in tensor_names,
    "bos_token_id": _field(reader, path, "tokenizer.ggml.bos_token_id", None),
    "eos_token_id": _field(reader, path, "tokenizer.ggml.eos_token_id", None),
    "pad_token_id": _field(reader, path, "tokenizer.ggml.padding_token_id", None),
  }


def _unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute`: per head, rows (pairs interleaved) -> (first halves, second halves)."""
  head_rows = weight.shape[0] // num_heads
  return weight.reshape(num_heads, head_rows // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def hf_tensors_from_gguf(reader, path: Path, hf_config: dict[str, Any]) -> dict[str, np.ndarray]:
  """All tensors dequantized to float32 under their Hugging Face names ([out, in] layout)."""
  from gguf.quants import dequantize

  tensors = {}
  for tensor in reader.tensors:
    name = tensor.name
    if name in _GLOBAL_NAMES:
      hf_name = _GLOBAL_NAMES[name]
    elif name.startswith("blk.") and name.split(".", 2)[2] in _LAYER_NAMES:
      _, layer, suffix = name.split(".", 2)
      hf_name = f"model.layers.{int(layer)}.{_LAYER_NAMES[suffix]}"
    else:
      raise ModelLoadError(f"{path}: unexpected GGUF tensor {name!r}")
    try:
      weight = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32)
    except (NotImplementedError, ValueError) as e:
      raise ModelLoadError(f"{path}: cannot dequantize tensor {name!r} ({tensor.tensor_type.name}): {e}") from e
    if name.endswith("attn_q.weight"):
      weight = _unpermute_rotary_rows(weight, hf_config["num_attention_heads"])
    elif name.endswith("attn_k.weight"):
      weight = _unpermute_rotary_rows(weight, hf_config["num_key_value_heads"])
    tensors[hf_name] = weight
  return tensors


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(path: str, mtime_ns: int) -> Tokenizer:
  metadata = _header(Path(path)).metadata
  name = str(metadata.get("general.name", Path(path).stem))
  try:
    # transformers' pipeline unchanged (no llama.cpp digit split): what the base model has always tokenized with.
    tokenizer = direct_gguf_tokenizer(metadata, name, llama_cpp_pre_tokenizer=False)
    if tokenizer is not None:
      return tokenizer
    from transformers import AutoTokenizer

    return from_transformers(AutoTokenizer.from_pretrained(str(Path(path).parent), gguf_file=Path(path).name), name)
  except Exception as e:  # transformers' GGUF tokenizer conversion raises assorted types.
    raise ModelLoadError(f"{path}: cannot build the tokenizer from GGUF metadata ({type(e).__name__}: {e})") from e


def load_gguf_tokenizer(path: str | Path) -> Tokenizer:
  """The tokenizer stored in a GGUF file as `transformers` converts it (its roles and `add_bos_token` kept), as a
  `Tokenizer` named like the model (`general.name`). Byte-level BPE files are built without transformers."""
  path = Path(path).resolve()
  if not path.is_file():
    raise ModelLoadError(f"{path}: no such GGUF file")
  return _cached_tokenizer(str(path), path.stat().st_mtime_ns)


def _header(path: Path) -> GgufHeader:
  try:
    return read_gguf_header(path)
  except (OSError, GgufHeaderError) as e:
    raise ModelLoadError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {e})") from e


def load_gguf(path: str | Path, dtype=jnp.float32, param_dtype=jnp.float32, load_tokenizer: bool = True) -> BaseModel:
  """A llama-architecture GGUF as a `BaseModel` (weights dequantized to float32, then cast to `param_dtype`)."""
  path = Path(path)
  reader = _reader(path)
  hf_config = hf_config_from_gguf(reader, path)
  family = family_for_model_type(hf_config["model_type"], where=str(path))
  try:
    config = family.config_from_hf(hf_config)
  except (KeyError, ValueError, TypeError) as e:
    raise ModelLoadError(f"{path}: unsupported or incomplete model metadata: {e!r}") from e
  tensors = hf_tensors_from_gguf(reader, path, hf_config)
  try:
    params = family.params_from_hf(config, tensors)
  except ModelLoadError as e:
    raise type(e)(f"{path}: {e}") from e
  name = str(_field(reader, path, "general.name", path.stem))
  tokenizer = load_gguf_tokenizer(path) if load_tokenizer else None
  params = cast_params(params, param_dtype)
  return BaseModel.from_params(family, config, params, name, tokenizer, dtype, weights_sha256=file_sha256(path))
