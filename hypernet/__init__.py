"""The hypernetwork that predicts embeddings of any tokenizer's tokens for a frozen base model."""

from hypernet.config import HypernetConfig, config_for_base
from hypernet.io import HypernetCheckpointError, save_hypernet
from hypernet.model import Hypernet, abstract_params, init_hypernet, predict, predict_jit
from hypernet.published_config import PublishedConfigError, PublishedHypernetConfig
from hypernet.record import Hypernetwork, check_fits_base, load_hypernetwork
from hypernet.vocabulary import embed_vocabulary

__all__ = [
    "HypernetConfig", "config_for_base", "HypernetCheckpointError", "save_hypernet",
    "Hypernet", "abstract_params", "init_hypernet", "predict", "predict_jit",
    "PublishedConfigError", "PublishedHypernetConfig",
    "Hypernetwork", "check_fits_base", "load_hypernetwork", "embed_vocabulary",
]
