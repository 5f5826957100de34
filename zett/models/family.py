"""The contract every base-model family implements, and the registry that finds them.

A family (Llama-style decoders, GPT-2, BERT-style masked LMs) is one module in `zett/models/`
that registers a `Family`. Hugging Face interop (`zett/interop/`) is generic: it reads/writes
tensors by Hugging Face name and calls the family's mapping functions.

Calling convention of every family's Flax (linen) module:

    out = module.apply({"params": params},
                       input_ids=None,          # int32 [B, T]  (or)
                       inputs_embeds=None,      # float [B, T, D] -- the hypernetwork path
                       attention_mask=None,     # int/bool [B, T], 1 = real token (padding anywhere)
                       position_ids=None,       # int32 [B, T]; default derived from attention_mask
                       output_embeddings=None,  # float [V', D]; replaces the LM head (any V')
                       output_bias=None,        # float [V'];  replaces the LM-head bias
                       cache=None,              # KVCache from `init_cache`, decoders only
                       compute_logits=True)
    out.logits          # float32 [B, T, V] (None if compute_logits=False)
    out.hidden_states   # [B, T, D], final hidden state right before the LM head projection
    out.cache           # the updated KVCache (decoders) or None
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from zett.errors import ZettError

Params = dict[str, Any]


class Embeddings(NamedTuple):
  """The vocabulary-sized parameters of a model, which tokenizer transfer replaces.

  input: [V, D]. output: [V, D] for untied models, None when tied to `input`.
  bias: [V] LM-head output bias for models that have one (BERT family), else None.
  """

  input: Any
  output: Any | None
  bias: Any | None


@dataclasses.dataclass(frozen=True)
class Family:
  """One base-model family: how to build it and how its weights map to Hugging Face names."""

  name: str
  """Our name for the family, e.g. "llama"."""
  model_types: tuple[str, ...]
  """Hugging Face `model_type` values this family loads, e.g. ("llama", "mistral", "qwen2")."""
  is_causal: bool
  """True for decoders (next-token loss), False for masked LMs."""
  config_from_hf: Callable[[Mapping[str, Any]], Any]
  """HF config.json dict -> our frozen config dataclass (raises ValueError on unsupported options)."""
  config_to_hf: Callable[[Any], dict[str, Any]]
  """Our config -> HF config.json dict that `transformers` loads (architectures, model_type, ...)."""
  make_module: Callable[..., Any]
  """(config, dtype=jnp.float32, remat=False) -> flax.linen.Module following the calling convention above;
  remat=True recomputes each layer in the backward pass (a runtime switch, not part of the config)."""
  params_from_hf: Callable[[Any, Mapping[str, np.ndarray]], Params]
  """(config, {hf_name: array}) -> our params; raises MissingTensorError / ShapeError naming the tensor."""
  params_to_hf: Callable[[Any, Params], dict[str, np.ndarray]]
  """(config, params) -> {hf_name: array} for safetensors export."""
  get_embeddings: Callable[[Any, Params], Embeddings]
  """(config, params) -> Embeddings (vocabulary-sized parameters)."""
  set_embeddings: Callable[[Any, Params, Embeddings], tuple[Any, Params]]
  """(config, params, new Embeddings of any vocab size) -> (config with new vocab_size, params)."""
  init_cache: Callable[..., Any] | None = None
  """(config, batch_size, max_length, dtype) -> empty KV cache (decoders only)."""


class ModelOutput(NamedTuple):
  logits: Any
  hidden_states: Any
  cache: Any = None


class ModelLoadError(ZettError, ValueError):
  """A checkpoint that cannot be loaded; the message names the file and the problem."""


class MissingTensorError(ModelLoadError):
  """A tensor the config requires is absent from the checkpoint."""


class ShapeError(ModelLoadError):
  """A tensor's shape disagrees with the config."""


def take_tensor(tensors: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> Any:
  """tensors[name] checked against `shape`; raises MissingTensorError / ShapeError naming the tensor.

  Loaders (`zett.interop`) catch these and prefix the file name.
  """
  if name not in tensors:
    raise MissingTensorError(f"missing tensor {name!r}")
  array = tensors[name]
  if tuple(array.shape) != tuple(shape):
    raise ShapeError(f"tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
  return array


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
  for mt in family.model_types:
    if mt in _REGISTRY and _REGISTRY[mt].name != family.name:
      raise ValueError(f"model_type {mt} already registered by {_REGISTRY[mt].name}")
    _REGISTRY[mt] = family
  return family


def family_for_model_type(model_type: str, where: str = "config.json") -> Family:
  _load_builtin_families()
  if model_type not in _REGISTRY:
    raise ModelLoadError(f"{where}: unknown model_type {model_type!r}; supported: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[model_type]


def _load_builtin_families() -> None:
  # Importing a family module registers it.
  import importlib

  for mod in ("llama", "gpt2", "bert"):
    try:
      importlib.import_module(f"zett.models.{mod}")
    except ModuleNotFoundError as e:
      if e.name != f"zett.models.{mod}":
        raise
