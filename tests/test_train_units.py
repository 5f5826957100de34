"""Fast unit tests of train/: config strictness, the text pipeline, batch layout, sharding rules, optimiser."""

import json

import jax
import numpy as np
import pytest

from zett.train.batch import TrainingVocabulary, build_batch
from zett.train.config import ConfigError, DataConfig, DataSource, load_train_config
from zett.train.data import DataError, TextBatcher, check_sources, heldout_texts, is_heldout
from tests._train_helpers import TINY_CONFIG


def _write_corpus(folder, files=12, paragraphs=8):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(files):
    (folder / f"f{i:02d}.txt").write_text("\n\n".join(f"file {i} paragraph {j} " + "lorem ipsum " * (j + 1)
                                                      for j in range(paragraphs)))
  return folder


def test_tiny_config_loads_and_unknown_keys_fail():
  config = load_train_config(TINY_CONFIG)
  assert config.data.batch_size == 4 and config.model.base == "tiny-llama"
  with pytest.raises(ConfigError, match="unknown key.*learning_rat"):
    load_train_config(TINY_CONFIG, ["optimizer.learning_rat=1e-3"])
  with pytest.raises(ConfigError, match="unknown key.*bogus"):
    load_train_config(TINY_CONFIG, ["bogus=1"])


def test_config_invariants():
  with pytest.raises(ConfigError, match="at least one text source"):
    load_train_config(TINY_CONFIG, ["data.sources=[]"])
  with pytest.raises(ConfigError, match="heldout_permille"):
    load_train_config(TINY_CONFIG, ["data.heldout_permille=1000"])
  with pytest.raises(ConfigError, match="mesh"):
    load_train_config(TINY_CONFIG, ["mesh.model=0"])
  with pytest.raises(ConfigError, match="weight"):
    DataSource(path="x.txt", weight=0)


def test_missing_data_path_is_a_clear_error(tmp_path):
  config = DataConfig(sources=(DataSource(path=str(tmp_path / "nope.jsonl")),))
  with pytest.raises(DataError, match="nope.jsonl: no such file"):
    check_sources(config)


def test_stdlib_sources_leave_out_installed_packages(tmp_path, monkeypatch):
  # pyenv and others install packages below the stdlib folder; neither they nor the stdlib's test suite are its code
  # (and both hold files that are not UTF-8).
  import sysconfig

  from zett.train.data import resolve_local_files

  for name in ("json/decoder.py", "site-packages/ipython/nonascii.py", "dist-packages/x/y.py", "test/encoded.py"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("x = 1\n")
  monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
  assert resolve_local_files(DataSource(path="stdlib:**/*.py")) == [str(tmp_path / "json" / "decoder.py")]
  with pytest.raises(DataError, match="matches no files"):
    resolve_local_files(DataSource(path="stdlib:site-packages/**/*.py"))


def test_batcher_resumes_exactly_and_mixes_by_weight(tmp_path):
  corpus = _write_corpus(tmp_path / "a")
  jsonl = tmp_path / "b.jsonl"
  jsonl.write_text("\n".join(json.dumps({"content": f"json doc {i} " * 20}) for i in range(50)))
  config = DataConfig(sources=(DataSource(path=str(corpus), text_unit="paragraph", weight=3.0),
                               DataSource(path=str(jsonl), text_field="content", weight=1.0)),
                      batch_size=8, sequence_length=16, heldout_permille=100)
  batcher = TextBatcher(config)
  for _ in range(5):
    batcher.next_texts()
  state = json.loads(json.dumps(batcher.get_state()))
  expected = [batcher.next_texts() for _ in range(40)]  # long enough to wrap both sources (new epochs)
  resumed = TextBatcher(config)
  resumed.set_state(state)
  assert [resumed.next_texts() for _ in range(40)] == expected
  chunks = [t for batch in expected for t in batch]
  assert all(0 < len(t.encode()) <= config.sequence_bytes for t in chunks)
  share_json = np.mean(["json doc" in t for t in chunks])
  assert 0.1 < share_json < 0.4  # weight 1 of 4


def test_heldout_split_is_by_document(tmp_path):
  corpus = _write_corpus(tmp_path / "a", files=30, paragraphs=6)
  config = DataConfig(sources=(DataSource(path=str(corpus), text_unit="paragraph"),), batch_size=4,
                      sequence_length=64, bytes_per_sequence=100000, heldout_permille=200, heldout_num_sequences=1)
  heldout = heldout_texts(config)[0].split("\n\n")
  assert heldout and all(is_heldout(doc, 200) for doc in heldout)
  batcher = TextBatcher(config)
  train_docs = {doc for _ in range(3) for text in batcher.next_texts() for doc in text.split("\n\n")}
  assert not train_docs & set(heldout)


def test_wrong_text_field_names_the_columns(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text(json.dumps({"body": "hello"}) + "\n")
  batcher = TextBatcher(DataConfig(sources=(DataSource(path=str(path)),), heldout_permille=0))
  with pytest.raises(DataError, match="no column 'text'.*body"):
    batcher.next_texts()


def test_build_batch_pads_vocabulary_and_sequences():
  vocab = TrainingVocabulary(surface_ids=np.array([[3, 0], [5, 6], [7, 0]], np.int32),
                             surface_lengths=np.array([1, 2, 1], np.int32),
                             special_base_ids=np.array([3, -1, -1], np.int32),
                             token_bytes=np.array([0, 4, 2], np.int32), mask_token_id=-1)
  batch = build_batch(vocab, [[1, 2, 1], [2]], sequence_length=4, vocab_rows=8)
  assert batch["token_ids"].tolist() == [[1, 2, 1, 0], [2, 0, 0, 0]]
  assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
  assert batch["vocab_mask"].tolist() == [True] * 3 + [False] * 5
  assert batch["base_ids"][:3].tolist() == [-1, -1, 7]  # specials and multi-subtoken rows are not "in base"
  assert batch["surface_ids"].shape == (8, 2)


def test_rules_shard_only_divisible_dimensions_and_each_axis_once():
  import jax
  from jax.sharding import PartitionSpec as P
  from zett.train import mesh as mesh_lib
  from zett.train.config import MeshConfig
  mesh = mesh_lib.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
  spec = mesh_lib.logical_to_spec(("vocab", "embed"), (10, 6), mesh, mesh_lib.RULES)
  assert spec == P("model", "data")
  # Two logical names on the same mesh axis: the second dimension stays replicated.
  assert mesh_lib.logical_to_spec(("embed", "hn_embed"), (4, 4), mesh, mesh_lib.RULES) == P("data", None)
  with pytest.raises(mesh_lib.MeshError, match="no rule"):
    mesh_lib.logical_to_spec(("unknown_axis",), (4,), mesh, mesh_lib.RULES)
  with pytest.raises(mesh_lib.MeshError, match="does not fit"):
    mesh_lib.make_mesh(MeshConfig(data=3, model=1), jax.devices()[:1])


def test_learning_rate_schedule_warms_up_then_decays():
  from zett.train.config import OptimizerConfig
  from zett.train.state import learning_rate_schedule
  schedule = learning_rate_schedule(OptimizerConfig(learning_rate=1e-3, warmup_steps=10), 100)
  values = [float(schedule(s)) for s in (0, 5, 10, 55, 100)]
  assert values[0] == 0 and values[1] == pytest.approx(5e-4) and values[2] == pytest.approx(1e-3)
  assert values[2] > values[3] > values[4] >= 0


def test_constant_schedule_decays_over_its_last_steps_only():
  from zett.train.config import ConfigError, OptimizerConfig
  from zett.train.state import learning_rate_schedule
  config = OptimizerConfig(learning_rate=1e-3, warmup_steps=10, schedule="constant", decay_steps=40,
                           end_learning_rate_ratio=0.1)
  schedule = learning_rate_schedule(config, 100)
  assert float(schedule(10)) == pytest.approx(1e-3) and float(schedule(60)) == pytest.approx(1e-3)
  assert float(schedule(80)) == pytest.approx(5.5e-4)
  assert float(schedule(100)) == pytest.approx(1e-4)
  flat = learning_rate_schedule(OptimizerConfig(learning_rate=1e-3, warmup_steps=10, schedule="constant"), 100)
  assert float(flat(100)) == pytest.approx(1e-3)
  with pytest.raises(ConfigError, match="decay_steps"):
    OptimizerConfig(schedule="cosine", decay_steps=5)


def test_offender_check_lists_replicated_parameters_largest_first():
  import jax
  import jax.numpy as jnp
  from jax.sharding import PartitionSpec as P
  from zett.train import mesh as mesh_lib
  from zett.train.config import MeshConfig
  mesh = mesh_lib.make_mesh(MeshConfig(data=1, model=1), jax.devices()[:1])
  params = {"small": jnp.zeros((4,)), "big": jnp.zeros((64, 64)), "bigger": jnp.zeros((128, 64))}
  logical = {"small": P("embed"), "big": P("vocab", "embed"), "bigger": P("mlp", "embed")}
  replicated = mesh_lib.param_shardings(logical, params, mesh, mesh_lib.RULE_TABLES["replicated"])
  offenders = mesh_lib.unsharded_offenders(replicated, params, 1000)
  assert [name for name, _, _ in offenders] == ["bigger", "big"]
  assert mesh_lib.unsharded_offenders(mesh_lib.param_shardings(logical, params, mesh, mesh_lib.RULES), params, 1000) == []


def test_parquet_source_reads_its_text_column(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path = tmp_path / "docs.parquet"
  pq.write_table(pa.table({"body": [f"parquet document {i} " * 10 for i in range(20)], "id": list(range(20))}), path)
  batcher = TextBatcher(DataConfig(sources=(DataSource(path=str(path), text_field="body"),), heldout_permille=0,
                                   batch_size=2, sequence_length=16))
  texts = batcher.next_texts()
  assert len(texts) == 2 and all(t.startswith("parquet document") or "parquet document" in t for t in texts)


def test_fit_encoder_buckets_drops_only_unused_negatives():
  from zett.hypernet.config import HypernetConfig
  from zett.hypernet.model import bucket_overflow
  from zett.train.batch import fit_encoder_buckets
  config = HypernetConfig(embedding_dim=8, base_vocab_size=100, surface_length=7)
  lengths = np.array([1, 2, 2, 2, 3, 5, 6, 7, 1, 2], np.int32)
  batch = {"token_ids": np.array([[1, 2, 5, 0]], np.int32), "attention_mask": np.array([[1, 1, 1, 0]], np.int32),
           "surface_lengths": lengths, "vocab_mask": np.ones(10, bool),
           "special_base_ids": np.full(10, -1, np.int32)}
  buckets = ((3, 3), (7, 2))
  fitted = fit_encoder_buckets(batch, config, buckets)
  assert bucket_overflow(config, fitted["surface_lengths"], buckets) == [0, 0]
  dropped = np.flatnonzero(~fitted["vocab_mask"])
  assert dropped.size == 3 and not set(dropped) & {1, 2, 5}  # rows the text uses stay
  assert (fitted["surface_lengths"][dropped] == 0).all()
  assert fit_encoder_buckets(batch, config, ((3, 10), (7, 10))) is batch  # nothing to do
  with pytest.raises(ValueError, match="encoder_buckets"):
    fit_encoder_buckets(dict(batch, token_ids=np.array([[1, 2, 3, 4]], np.int32),
                             attention_mask=np.ones((1, 4), np.int32)), config, ((3, 2), (7, 2)))


def test_negative_logit_offsets_weight_each_negative_by_its_draw_chance():
  from zett.hypernet.config import HypernetConfig
  from zett.train.batch import fit_encoder_buckets, negative_logit_offsets
  config = HypernetConfig(embedding_dim=8, base_vocab_size=100, surface_length=7)
  # Row 0 special; rows 1, 2 used by the text; rows 3..9 negatives drawn from 100 - 3 = 97 unused tokens.
  lengths = np.array([1, 2, 1, 2, 2, 2, 3, 1, 1, 5], np.int32)
  drawn = {"token_ids": np.array([[1, 2, 1, 0]], np.int32), "attention_mask": np.array([[1, 1, 1, 0]], np.int32),
           "surface_lengths": lengths, "vocab_mask": np.ones(10, bool),
           "special_base_ids": np.array([0] + [-1] * 9, np.int32)}
  offsets = negative_logit_offsets(drawn, drawn, 100, config)
  assert offsets[:3].tolist() == [0, 0, 0]
  np.testing.assert_allclose(offsets[3:], np.log(97 / 7), rtol=1e-6)
  # Bucket (2..3) holds 1 row + 4 negatives but only 3 slots: 2 of its 4 negatives are left out; theirs count double.
  buckets = ((3, 3), (7, 1))
  fitted = fit_encoder_buckets(drawn, config, buckets)
  offsets = negative_logit_offsets(drawn, fitted, 100, config, buckets)
  kept_two_three = [r for r in (3, 4, 5, 6) if fitted["vocab_mask"][r]]
  assert len(kept_two_three) == 2
  np.testing.assert_allclose(offsets[kept_two_three], np.log(97 / 7 * 4 / 2), rtol=1e-6)
  np.testing.assert_allclose(offsets[[7, 8, 9]], np.log(97 / 7), rtol=1e-6)
  assert (offsets[~fitted["vocab_mask"]] == 0).all()


@pytest.mark.parametrize("base", ["tiny_base", "tiny_xlmr_base"])
def test_tiny_bases_record_the_sha256_of_their_float32_draw_whatever_the_param_dtype(base):
  import jax.numpy as jnp

  from zett.models.base import params_sha256
  from zett.testing import tiny

  build = getattr(tiny, base)
  drawn, cast = build(hidden_size=32), build(hidden_size=32, param_dtype=jnp.bfloat16)
  assert {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(cast.params)} == {"bfloat16"}
  assert cast.weights_sha256 == drawn.weights_sha256 == params_sha256(drawn.params)
  assert build(hidden_size=32, seed=1).weights_sha256 != drawn.weights_sha256
