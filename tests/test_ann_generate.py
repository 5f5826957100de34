"""Large-vocabulary generation: BPE with the base forced in, ANN vs exact steps, exact vs the plain model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zett.ann.build import VocabularyError, build_vocabulary, train_bpe_vocabulary
from zett.ann.generate import LargeVocabGenerator
from zett.stdlib_source import stdlib_texts_up_to
from zett.testing.bpe import train_byte_level_bpe
from zett.testing.tiny import tiny_llama
from zett.tokenization import from_backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_tokenizer():
  backend = train_byte_level_bpe(stdlib_texts_up_to(300_000), 768, ["<|endoftext|>"])
  return from_backend(backend, "tiny-bpe", roles={"eos": "<|endoftext|>"})


def _f16_exact_model(tokenizer, **kwargs):
  # Stores hold float16; weights that float16 represents exactly make store rows equal the model's rows.
  model = tiny_llama(vocab_size=tokenizer.vocab_size, hidden_size=64, tokenizer=tokenizer, **kwargs)
  params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float16).astype(jnp.float32), model.params)
  return type(model)(**{**model.__dict__, "params": params})


def test_trained_vocabulary_keeps_base_ids(base_tokenizer):
  large = train_bpe_vocabulary(stdlib_texts_up_to(600_000), 5000, base_tokenizer)
  assert 4000 < large.vocab_size <= 5000
  base_pieces, large_pieces = base_tokenizer.id_to_piece, large.id_to_piece
  assert large_pieces[:len(base_pieces)] == base_pieces
  text = "def __init__(self, value):\n    return self.value"
  assert large.decode(large.encode(text)) == text
  assert len(large.encode(text)) < len(base_tokenizer.encode(text))
  with pytest.raises(VocabularyError, match="not larger"):
    train_bpe_vocabulary(["abc"], 100, base_tokenizer)


def test_exact_with_base_vocabulary_equals_plain_greedy(tmp_path, base_tokenizer):
  from zett.hypernet.config import config_for_base
  from zett.hypernet.model import init_hypernet

  model = _f16_exact_model(base_tokenizer)
  # An untrained hypernetwork predicts the mean of a token's subtokens: for base tokens, their own rows.
  config = config_for_base(model, num_layers=1, hidden_size=64, num_heads=2)
  params = init_hypernet(config, model.embeddings, jax.random.key(0))
  build_vocabulary(tmp_path / "v", model, base_tokenizer, hypernet=(config, params), batch_size=512,
                   index_spec=None, progress=False)
  generator = LargeVocabGenerator(model, tmp_path / "v", load_ann_index=False)
  prompt = base_tokenizer.encode("import os\nimport sys\n\ndef main(")
  steps = 24
  ours = [token for token, _ in generator.generate_ids(prompt, steps, exact=True, stop_at_eos=False)]

  # The plain model with its own LM head and no KV cache; right padding to one length (causal, so the
  # padding never affects earlier positions) keeps it to one compilation.
  plain_logits = jax.jit(lambda ids: model.module.apply({"params": model.params}, input_ids=ids).logits)
  ids = list(prompt)
  for _ in range(steps):
    padded = np.zeros((1, len(prompt) + steps), np.int32)
    padded[0, :len(ids)] = ids
    ids.append(int(jnp.argmax(plain_logits(jnp.asarray(padded))[0, len(ids) - 1])))
  assert ours == ids[len(prompt):]
  assert len(set(ours)) > 3  # a trajectory, not one repeated token

  # A damaged vocab.json is a clear error naming it, on open and on a resumed build.
  meta = tmp_path / "v" / "vocab.json"
  for damaged in (meta.read_bytes()[:-5], b"[1, 2]"):
    meta.write_bytes(damaged)
    with pytest.raises(VocabularyError, match="vocab.json"):
      LargeVocabGenerator(model, tmp_path / "v", load_ann_index=False)
    with pytest.raises(VocabularyError, match="vocab.json"):
      build_vocabulary(tmp_path / "v", model, base_tokenizer, hypernet=(config, params), batch_size=512,
                       index_spec=None, progress=False)


def test_ann_top1_matches_exact_on_greedy_steps(tmp_path, base_tokenizer):
  large = train_bpe_vocabulary(stdlib_texts_up_to(4_000_000), 20_000, base_tokenizer)
  assert large.vocab_size > 15_000
  model = tiny_llama(vocab_size=base_tokenizer.vocab_size, hidden_size=64, tokenizer=base_tokenizer)
  build_vocabulary(tmp_path / "v", model, large, batch_size=8192, progress=False)
  generator = LargeVocabGenerator(model, tmp_path / "v")
  agree, steps, chosen = 0, 0, set()
  for prompt in ["def parse(self, text):\n", "class Reader:\n    def __init__(self", "import re\n",
                 "    return [x for x in"]:
    for token, state in generator.generate_ids(large.encode(prompt), 50, stop_at_eos=False):
      exact_scores, exact_ids = generator.select(state[None], exact=True)
      exact_top1 = int(exact_ids[0, 0])
      # Ties count as agreement: a few FVT rows coincide exactly, and either id has the best logit.
      agree += exact_top1 == token or generator.exact_scorer.logits(state[None])[0, token] >= exact_scores[0, 0]
      steps += 1
      chosen.add(exact_top1)
  assert steps == 200 and agree / steps >= 0.99, (agree, steps)
  assert len(chosen) > 20  # many different steps, not one easy query repeated
  text = "".join(generator.generate("def parse(self, text):\n", 8))
  assert isinstance(text, str) and text
  assert generator.stats.new_tokens == 8 and generator.stats.new_bytes >= len(text.encode()) - 3


def test_cli_builds_then_streams_the_same_text_as_the_library(tmp_path, base_tokenizer, capsys):
  from zett.cli import main
  from zett.interop.hf import save_pretrained
  from zett.models.load import load_model

  save_pretrained(tiny_llama(vocab_size=base_tokenizer.vocab_size, hidden_size=64), tmp_path / "m")
  base_tokenizer.to_hf(tmp_path / "m")
  base_tokenizer.backend.save(str(tmp_path / "base_tokenizer.json"))
  argv = ["generate", "--model", str(tmp_path / "m"), "--vocab", str(tmp_path / "v"), "--prompt", "def main(",
          "--max-new-tokens", "6", "--build-from", str(tmp_path / "base_tokenizer.json")]
  assert main(argv) == 0
  cli_text = capsys.readouterr().out
  generator = LargeVocabGenerator(load_model(tmp_path / "m"), tmp_path / "v")
  assert cli_text == "".join(generator.generate("def main(", 6)) + "\n"
  assert main(argv[:-2] + ["--exact"]) == 0  # the vocabulary now exists; exact needs no index
  assert main(["generate", "--model", str(tmp_path / "m"), "--vocab", str(tmp_path / "nothing"), "--prompt", "x"]) == 2
  assert "not a vocabulary directory" in capsys.readouterr().err


def test_a_changed_index_spec_rebuilds_the_index(tmp_path, caplog):
  import json
  import logging

  from zett.ann.index import IndexSpec, load_index
  from zett.ann.store import EmbeddingStore
  from zett.testing.tiny import tiny_base

  model = tiny_base()  # untied: the index lives over the output store
  vocab = tmp_path / "v"

  def build(spec):
    build_vocabulary(vocab, model, model.tokenizer, index_spec=spec, progress=False)
    return load_index(EmbeddingStore(vocab / "output"))

  assert build(IndexSpec(kind="flat")).spec.kind == "flat"
  index_file = vocab / "output" / "index.json"
  written = index_file.stat().st_mtime_ns
  build(IndexSpec(kind="flat"))
  assert index_file.stat().st_mtime_ns == written  # the same spec keeps the index it built
  with caplog.at_level(logging.INFO, logger="zett.ann.build"):
    rebuilt = build(IndexSpec(kind="hnsw", hnsw_neighbors=16))
  assert (rebuilt.spec.kind, rebuilt.spec.hnsw_neighbors) == ("hnsw", 16)
  assert "kind 'flat' -> 'hnsw'" in caplog.text and "hnsw_neighbors 32 -> 16" in caplog.text

  # A directory built before vocab.json recorded the spec is judged by the index's own spec.
  meta = json.loads((vocab / "vocab.json").read_text())
  del meta["index_spec"]
  (vocab / "vocab.json").write_text(json.dumps(meta))
  written = index_file.stat().st_mtime_ns
  build(IndexSpec(kind="hnsw", hnsw_neighbors=16))
  assert index_file.stat().st_mtime_ns == written
  assert build(IndexSpec(kind="flat")).spec.kind == "flat"
