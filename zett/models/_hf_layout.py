"""How Hugging Face checkpoints lay out the params of our scanned layers, and the conversion both ways.

A checkpoint keeps one set of tensors per layer (`model.layers.3.…`), where our params stack them along a leading
"layers" axis. A kernel of ours is [in..., out...] with the heads split out; a torch `nn.Linear` weight is
[out, in] with them merged, and a vector (norm scale, bias) is flat. GPT-2's Conv1D weights are already [in, out]
and fused, so GPT-2 maps its own layers and shares only the stacking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import traverse_util

from zett.models.family import Params, take_tensor


class LayerTensor(NamedTuple):
  """One per-layer param and the Hugging Face tensor it is."""

  ours: str
  """Path in a layer's param tree, "/"-separated ("q_proj", "input_norm/scale")."""
  hf_suffix: str
  """The HF name after the layer prefix ("self_attn.q_proj.weight")."""
  shape: tuple[int, ...]
  """Our shape, without the "layers" axis."""
  input_axes: int
  """Leading input axes of a kernel (1 for [D, H, Dh], 2 for [H, Dh, D]): a torch Linear weight [out, in] in the
  checkpoint. 0 for a vector: the same values, flat."""

  @property
  def hf_shape(self) -> tuple[int, ...]:
    if self.input_axes == 0:
      return (math.prod(self.shape),)
    return (math.prod(self.shape[self.input_axes :]), math.prod(self.shape[: self.input_axes]))

  def from_hf(self, array) -> np.ndarray:
    array = np.asarray(array)
    return (array.T if self.input_axes else array).reshape(self.shape)

  def to_hf(self, array) -> np.ndarray:
    array = np.asarray(array)
    if self.input_axes == 0:
      return array.reshape(-1)
    return np.ascontiguousarray(array.reshape(math.prod(array.shape[: self.input_axes]), -1).T)


def stack_layers(per_layer: Sequence[Mapping[str, Any]]) -> Params:
  """Per-layer param trees (as checkpoints keep them) stacked along the leading "layers" axis."""
  return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *per_layer)


def unstack_layers(layers: Mapping[str, Any], num_layers: int) -> list[Params]:
  """The stacked layer params (numpy) as one param tree per layer: the inverse of `stack_layers`."""
  return [jax.tree_util.tree_map(lambda x, i=i: x[i], dict(layers)) for i in range(num_layers)]


def layers_from_hf(
  tensors: Mapping[str, Any],
  layer_map: Sequence[LayerTensor],
  layer_prefixes: Sequence[str],
  take: Callable[[Mapping[str, Any], str, tuple[int, ...]], Any] = take_tensor,
) -> Params:
  """The stacked layer params from the tensors named `prefix + hf_suffix` for each layer's prefix; `take` checks
  each tensor (default `take_tensor`: MissingTensorError / ShapeError naming it)."""
  per_layer = []
  for prefix in layer_prefixes:
    flat = {t.ours: t.from_hf(take(tensors, prefix + t.hf_suffix, t.hf_shape)) for t in layer_map}
    per_layer.append(traverse_util.unflatten_dict(flat, sep="/"))
  return stack_layers(per_layer)


def layers_to_hf(
  layers: Mapping[str, Any], layer_map: Sequence[LayerTensor], layer_prefixes: Sequence[str]
) -> dict[str, np.ndarray]:
  """{HF name: array} of the stacked layer params (numpy): the inverse of `layers_from_hf`."""
  out = {}
  for prefix, layer in zip(layer_prefixes, unstack_layers(layers, len(layer_prefixes)), strict=True):
    flat = traverse_util.flatten_dict(layer, sep="/")
    out.update({prefix + t.hf_suffix: t.to_hf(flat[t.ours]) for t in layer_map})
  return out
