"""Tiny random `transformers` (PyTorch) reference models for parity tests; needs torch, no network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

# Small but exercising every option the Llama family maps: GQA, tied/untied, biases, rope scaling, windows.
LLAMA_VARIANTS = {
  "llama": dict(model_type="llama", num_key_value_heads=2),
  "llama_tied": dict(model_type="llama", num_key_value_heads=4, tie_word_embeddings=True),
  "llama3_rope": dict(
    model_type="llama",
    num_key_value_heads=1,
    rope_theta=500000.0,
    rope_scaling={
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 16,
    },
  ),
  "llama_bias": dict(model_type="llama", num_key_value_heads=2, attention_bias=True, mlp_bias=True),
  "mistral_window": dict(model_type="mistral", num_key_value_heads=2, sliding_window=4),
  "qwen2": dict(model_type="qwen2", num_key_value_heads=2),
}


def random_hf_causal_lm(
  variant: str,
  seed: int = 0,
  vocab_size: int = 128,
  hidden_size: int = 32,
  num_hidden_layers: int = 2,
  num_attention_heads: int = 4,
):
  """A random `transformers` causal LM (eager attention, float32) for one of `LLAMA_VARIANTS`.

  Norm weights and biases are randomised too (HF initialises them to constants, which would hide
  mapping mistakes).
  """
  import torch
  import transformers

  options = dict(LLAMA_VARIANTS[variant])
  model_type = options.pop("model_type")
  config = transformers.AutoConfig.for_model(
    model_type,
    vocab_size=vocab_size,
    hidden_size=hidden_size,
    intermediate_size=2 * hidden_size + 8,
    num_hidden_layers=num_hidden_layers,
    num_attention_heads=num_attention_heads,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    **options,
  )
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
  return randomize_constant_params(model, lambda name: "norm" in name)


def randomize_constant_params(model, is_norm: Callable[[str], bool]):
  """Draws norm weights around 1 and norm and other biases around 0, in place, from torch's current seed.

  HF initialises them to constants, which would hide mapping mistakes (a swapped weight and bias still match).
  """
  import torch

  with torch.no_grad():
    for name, p in model.named_parameters():
      if is_norm(name):
        p.copy_(1.0 + 0.2 * torch.randn_like(p)) if name.endswith("weight") else p.copy_(0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
  return model


def numpy_state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def base_model_from_torch(family_module, reference, name: str, dtype=jnp.float32):
  """The `BaseModel` of a family module (`zett.models.bert`, `gpt2`, ...) holding a torch reference's weights."""
  from zett.models.base import BaseModel

  config = family_module.config_from_hf(reference.config.to_dict())
  params = family_module.params_from_hf(config, numpy_state_dict(reference))
  return BaseModel.from_params(family_module.FAMILY, config, params, name, dtype=dtype)


def save_hf(model, folder: Path) -> Path:
  model.save_pretrained(str(folder))
  return folder


def torch_logits(
  model, input_ids: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: np.ndarray | None = None
) -> np.ndarray:
  """float32 logits [B, T, V] from a PyTorch model (position ids passed explicitly for padded batches)."""
  import torch

  kwargs = {"input_ids": torch.as_tensor(np.asarray(input_ids), dtype=torch.long)}
  if attention_mask is not None:
    kwargs["attention_mask"] = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  if position_ids is not None:
    kwargs["position_ids"] = torch.as_tensor(np.asarray(position_ids), dtype=torch.long)
  with torch.no_grad():
    return model(**kwargs).logits.float().numpy()


def padded_batch(vocab_size: int, seed: int = 0, length: int = 10):
  """ids, mask, positions [3, length]: one full row, one right-padded, one left-padded."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab_size, size=(3, length)).astype(np.int32)
  mask = np.ones((3, length), np.int32)
  mask[1, length - 3 :] = 0
  mask[2, :4] = 0
  ids[mask == 0] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return ids, mask, positions
