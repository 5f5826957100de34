"""Frozen base-model families in Flax (linen), loaded from Hugging Face checkpoints or GGUF."""

from zett.models.family import (
  Embeddings,
  Family,
  MissingTensorError,
  ModelLoadError,
  ModelOutput,
  ShapeError,
  family_for_model_type,
  register,
  take_tensor,
)

__all__ = [
  "Embeddings",
  "Family",
  "MissingTensorError",
  "ModelLoadError",
  "ModelOutput",
  "ShapeError",
  "family_for_model_type",
  "register",
  "take_tensor",
]
