"""An encoder base (tiny XLM-R: tied embeddings + LM-head bias) trains with masked-LM and a predicted output bias."""

import numpy as np
import pytest

from tests._train_helpers import TINY_CONFIG
from zett.train.config import load_train_config


@pytest.mark.slow
def test_tiny_xlmr_trains_with_masked_lm_and_a_predicted_output_bias(tmp_path):
  from zett.train.loop import train
  messages = []
  config = load_train_config(TINY_CONFIG, [
      f"run_dir={tmp_path / 'run'}", "model.base=tiny-xlmr", "num_train_steps=40", "eval.every_steps=40",
      "checkpoint.save_every_steps=40", "logging.progress_bar=false", "logging.every_steps=5"])
  summary = train(config, log=messages.append)
  assert any("masked LM objective" in m for m in messages)
  hypernet_config = summary["hypernet_config"]
  assert hypernet_config.predict_output_bias and not hypernet_config.predict_output_embeddings
  # The bias head starts at zero (heuristic = mean of subtoken biases); the MLM loss must have moved it.
  bias_kernel = np.asarray(summary["params"]["bias_head"]["kernel"])
  assert np.abs(bias_kernel).max() > 0
  start, end = summary["eval"][0], summary["eval"][-1]
  assert end["bpb/sampled-0"] < start["bpb/sampled-0"], (start, end)
  assert np.isfinite(summary["final"]["loss"])
