"""Hypernetwork config: a frozen, self-describing record saved next to every checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH

REFERENCE_VOCAB_SIZE = 32768
"""`condition_on_vocab_size`: a vocabulary of this size adds nothing (log2(V / REFERENCE_VOCAB_SIZE) = 0)."""


@dataclasses.dataclass(frozen=True)
class HypernetConfig:
  """Shape and provenance of a hypernetwork.

  The provenance fields (base model id, weights sha256, base tokenizer) let `hypernet.load_hypernetwork` refuse a
  checkpoint trained for a different base before anything is computed.
  """

  embedding_dim: int
  """Width d of the base model's embeddings (the hypernetwork predicts d-wide rows)."""
  base_vocab_size: int
  """Rows of the base embedding matrices that surface-form ids index."""
  hidden_size: int = 0
  """Width of the encoder body; 0 means "same as embedding_dim" (the paper's choice)."""
  num_layers: int = 3
  num_heads: int = 0
  """0 means max(1, hidden_size // 64), the paper's choice."""
  mlp_size: int = 0
  """0 means 2 * hidden_size."""
  surface_length: int = DEFAULT_SURFACE_LENGTH
  """L: at most this many base subtokens spell a target token (7 in all published runs)."""
  predict_output_embeddings: bool = False
  """True for untied bases: a separate output-embedding head, and inputs concatenate in+out rows."""
  predict_output_bias: bool = False
  """True for bases with an LM-head output bias (BERT family)."""
  heuristic: Literal["mean", "first"] = "mean"
  """What the residual parameterisation reproduces at initialisation."""
  keep_base_tokens: bool = True
  """Tokens spelled by one base subtoken (the same bytes as a base token) keep that token's rows exactly, as FVT does;
  the hypernetwork predicts only tokens the base does not have. Off: it predicts every row (the paper's setup, with
  an auxiliary loss pulling overlapping tokens back toward their original rows)."""
  condition_on_vocab_size: bool = False
  """Predictions also see the target vocabulary's size V: a learned vector times log2(V / REFERENCE_VOCAB_SIZE) is
  added to every surface position's input. The softmax mass on predicted rows grows with their number, so a
  hypernetwork that cannot see V must pick one calibration for a 32k and a 151k vocabulary. Off (earlier
  checkpoints): no such parameter, and V is ignored."""
  base_model: str = ""
  base_weights_sha256: str = ""
  base_tokenizer: str = ""

  def __post_init__(self):
    if self.embedding_dim <= 0 or self.base_vocab_size <= 0:
      raise ValueError("embedding_dim and base_vocab_size must be positive")
    if self.surface_length < 1:
      raise ValueError("surface_length must be >= 1")
    if self.num_layers < 0:
      raise ValueError("num_layers must be >= 0")
    if self.body_hidden_size % self.body_num_heads:
      raise ValueError(f"hidden_size {self.body_hidden_size} is not divisible by num_heads {self.body_num_heads}")

  @property
  def body_hidden_size(self) -> int:
    return self.hidden_size or self.embedding_dim

  @property
  def body_num_heads(self) -> int:
    return self.num_heads or max(1, self.body_hidden_size // 64)

  @property
  def body_mlp_size(self) -> int:
    return self.mlp_size or 2 * self.body_hidden_size

  @property
  def input_width(self) -> int:
    """Width of one subtoken's input features: in-embedding, plus out-embedding when untied."""
    return self.embedding_dim * (2 if self.predict_output_embeddings else 1)


def config_for_base(model, **overrides) -> HypernetConfig:
  """A hypernetwork config matching a loaded base model (`zett.models.base.BaseModel`)."""
  embeddings = model.family.get_embeddings(model.config, model.params)
  fields: dict[str, Any] = dict(
    embedding_dim=int(embeddings.input.shape[1]),
    base_vocab_size=int(embeddings.input.shape[0]),
    predict_output_embeddings=embeddings.output is not None,
    predict_output_bias=embeddings.bias is not None,
    base_model=getattr(model, "name", ""),
    base_weights_sha256=getattr(model, "weights_sha256", ""),
  )
  fields.update(overrides)
  return HypernetConfig(**fields)
