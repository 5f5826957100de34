"""The hypernetwork that predicts embeddings of any tokenizer's tokens for a frozen base model."""

from hypernet.config import HypernetConfig, config_for_base
from hypernet.io import HypernetCheckpointError, load_hypernet, save_hypernet
from hypernet.model import Hypernet, abstract_params, init_hypernet, predict, predict_jit
from hypernet.published_config import PublishedConfigError, PublishedHypernetConfig
from hypernet.published_io import load_published_hypernet

__all__ = [
    "HypernetConfig", "config_for_base", "HypernetCheckpointError", "load_hypernet", "save_hypernet",
    "Hypernet", "abstract_params", "init_hypernet", "predict", "predict_jit",
    "PublishedConfigError", "PublishedHypernetConfig", "load_published_hypernet",
]
