"""The norms (LayerNorm for GPT-2 and BERT, RMSNorm for Llama) and the Hugging Face activation functions by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zett.models._layers import param

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
  "tanh": jnp.tanh,
}


def check_activation(name: Any, field: str) -> str:
  """`name` if it is an activation we implement, else ValueError naming the config field."""
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported {field} {name!r} (supported: {', '.join(sorted(_ACTIVATIONS))})")
  return name


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation `transformers` calls `name` (ACT2FN); "gelu" is the exact erf form."""
  return _ACTIVATIONS[check_activation(name, "activation")]


class LayerNorm(nn.Module):
  """LayerNorm with scale and bias; statistics in float32 (two-pass variance, as PyTorch computes it)."""

  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_btd):
    features = x_btd.shape[-1]
    scale_d = param(self, "scale", ("embed",), (features,), nn.initializers.ones)
    bias_d = param(self, "bias", ("embed",), (features,), nn.initializers.zeros)
    x32 = x_btd.astype(jnp.float32)
    centered = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    normed = centered * jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + self.eps)
    return (normed * scale_d.astype(jnp.float32) + bias_d.astype(jnp.float32)).astype(self.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm computed in float32, as `transformers`' LlamaRMSNorm does."""

  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_btd):
    scale_d = param(self, "scale", ("embed",), (x_btd.shape[-1],), nn.initializers.ones)
    x32 = x_btd.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    # HF casts back to the input dtype before multiplying by the weight.
    return scale_d.astype(self.dtype) * x32.astype(self.dtype)
