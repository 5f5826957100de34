"""`BaseModel`: a frozen base model as every loader (Hugging Face, GGUF, in memory) returns it.

Apart from `load` because the loaders in `zett.interop` build it while `load` dispatches to them: with it in
`load`, the two imported each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zett.models.family import Embeddings, Family, Params
from zett.tokenization.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class BaseModel:
  """A frozen base model: family, config, Flax module, params and (optionally) its tokenizer."""

  family: Family
  config: Any
  module: Any
  params: Params
  tokenizer: Tokenizer | None
  """The base's own tokenizer, from load time on (a Hugging Face export saves its `to_transformers()`)."""
  name: str
  weights_sha256: str
  """sha256 of the weights file(s) it was loaded from (of the param bytes for models built in memory)."""

  @classmethod
  def from_params(
    cls,
    family: Family,
    config: Any,
    params: Params,
    name: str,
    tokenizer: Tokenizer | None = None,
    dtype=jnp.float32,
    weights_sha256: str | None = None,
  ) -> BaseModel:
    """`family`'s module for `config` computing in `dtype` over `params`; `weights_sha256` defaults to
    `params_sha256(params)` (a loader passes the sha256 of the files it read)."""
    return cls(
      family=family,
      config=config,
      module=family.make_module(config, dtype),
      params=params,
      tokenizer=tokenizer,
      name=name,
      weights_sha256=params_sha256(params) if weights_sha256 is None else weights_sha256,
    )

  @property
  def embeddings(self) -> Embeddings:
    return self.family.get_embeddings(self.config, self.params)

  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.params)))


def params_sha256(params: Params) -> str:
  """sha256 over the param bytes in tree order (for models that never touched a file)."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def cast_params(params: Params, param_dtype) -> Params:
  """Floating params to `param_dtype` as jax arrays."""
  return jax.tree_util.tree_map(
    lambda x: (
      jnp.asarray(x, param_dtype)
      if np.issubdtype(np.asarray(x).dtype, np.floating) or str(np.asarray(x).dtype) == "bfloat16"
      else jnp.asarray(x)
    ),
    params,
  )
