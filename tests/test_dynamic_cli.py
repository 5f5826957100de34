"""`zett dynamic` end to end on a tiny saved model, and its input errors."""

from __future__ import annotations

import jax
import pytest

from zett.cli import main


def test_missing_and_empty_text_files(tmp_path, capsys):
  assert main(["dynamic", "--text", str(tmp_path / "nope.txt")]) == 2
  assert "nope.txt: no such text file" in capsys.readouterr().err
  (tmp_path / "empty.txt").write_text("\n\n  \n")
  assert main(["dynamic", "--text", str(tmp_path / "empty.txt")]) == 2
  assert "empty.txt: the file has no text" in capsys.readouterr().err


@pytest.mark.slow
def test_dynamic_cli_on_tiny_model(tmp_path, capsys, textwrap_bpe):
  from transformers import PreTrainedTokenizerFast

  from zett.hypernet.config import config_for_base
  from zett.hypernet.io import save_hypernet
  from zett.hypernet.model import init_hypernet
  from zett.interop.hf import save_pretrained
  from zett.models.load import load_model
  from zett.testing.tiny import tiny_llama

  tok = textwrap_bpe(300)
  model = tiny_llama(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1)
  save_pretrained(model, tmp_path / "model", tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok))
  loaded = load_model(tmp_path / "model")
  config = config_for_base(loaded, num_layers=1)
  save_hypernet(tmp_path / "hypernet", config, init_hypernet(config, loaded.embeddings, jax.random.key(0)))
  text = tmp_path / "text.txt"
  text.write_text("Wrap the paragraph text so every line is at most width characters long.\n\n"
                  "Dedent removes any common leading whitespace from every line in text.\n\n"
                  "Indent adds prefix to the beginning of selected lines in text.\n")
  argv = ["dynamic", "--model", str(tmp_path / "model"), "--hypernet", str(tmp_path / "hypernet"),
          "--text", str(text), "--batch-size", "2", "--max-length", "24", "--generate", "3"]
  assert main(argv + ["--reduction", "0.2"]) == 0
  out = capsys.readouterr().out
  assert "target_reduction=0.2" in out and "cache hit rate" in out and "after merged prefill" in out
  total = next(line for line in out.splitlines() if line.startswith("total:"))
  before, after = (int(x) for x in total.split()[1:4:2])
  assert after < before and after <= 0.8 * before + 2  # each batch stops once 20% shorter
  assert main(argv + ["--merges", "0"]) == 0
  out = capsys.readouterr().out
  assert "(0.0% shorter)" in out
  bpb_line = next(line for line in out.splitlines() if line.startswith("bits per byte"))
  assert "(+0.0000)" in bpb_line  # no merges: merged prefill is the base prefill
