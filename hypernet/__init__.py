"""The hypernetwork that predicts embeddings of any tokenizer's tokens for a frozen base model."""

from zett.hypernet.config import HypernetConfig, config_for_base
from zett.hypernet.io import HypernetCheckpointError, save_hypernet
from zett.hypernet.model import Hypernet, abstract_params, init_hypernet, predict, predict_jit
from zett.hypernet.published_config import PublishedConfigError, PublishedHypernetConfig
from zett.hypernet.record import Hypernetwork, check_fits_base, load_hypernetwork
from zett.hypernet.vocabulary import embed_vocabulary

__all__ = [
  "HypernetConfig",
  "config_for_base",
  "HypernetCheckpointError",
  "save_hypernet",
  "Hypernet",
  "abstract_params",
  "init_hypernet",
  "predict",
  "predict_jit",
  "PublishedConfigError",
  "PublishedHypernetConfig",
  "Hypernetwork",
  "check_fits_base",
  "load_hypernetwork",
  "embed_vocabulary",
]
