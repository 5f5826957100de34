"""Frozen base-model families in Flax (linen), loaded from Hugging Face checkpoints or GGUF."""

from zett.models.family import Embeddings, Family, ModelLoadError, ModelOutput, family_for_model_type, register

__all__ = ["Embeddings", "Family", "ModelLoadError", "ModelOutput", "family_for_model_type", "register"]
