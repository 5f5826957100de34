"""Hypernetwork training: `zett train CONFIG.yaml [dotted.overrides ...] [--resume]`.

Entry points: `train.config.load_train_config(path, overrides) -> TrainConfig` and
`train.loop.train(config, resume=False) -> summary`. Modules, top to bottom: config -> data (text) -> vocab/batch
(sampled tokenizers, static-shape batches) -> mesh (sharding rules) -> state/step (optimiser, loss, jitted step) ->
checkpoint -> setup (checks, then build) -> loop.
"""

from zett.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config"]
