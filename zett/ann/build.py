"""Building a large vocabulary: train (or take) a tokenizer, predict its embeddings into stores.

A vocabulary directory holds everything generation needs:

    tokenizer.json   the large vocabulary (a `tokenizers` file; base tokens keep their base ids
                     when the vocabulary was trained here with the base forced in)
    vocab.json       base model name + weights sha256, how embeddings were made, vocabulary sha256,
                     the IndexSpec the ANN index was built from
    input/           EmbeddingStore of input embeddings [V, D]
    output/          EmbeddingStore of output embeddings [V, D] (untied bases), else absent
                     (tied: scoring uses input/); the ANN index lives next to the scored store
    bias.npy         output bias [V] (bases with an LM-head bias only)

Embeddings come from the hypernetwork in batches of surface forms (or, without a hypernetwork,
from the FVT-style mean of the subtoken embeddings, which is also what an untrained hypernetwork
predicts), streamed chunk by chunk into the stores, so a build is resumable and never holds the
table in memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tokenizers

from zett.ann.index import IndexMismatchError, load_index
from zett.ann.index_build import build_index
from zett.ann.index_spec import IndexSpec
from zett.ann.store import EmbeddingStore, build_store, vocabulary_sha256
from zett.errors import ZettError
from zett.models.family import Embeddings
from zett.tokenization import Tokenizer, from_backend, load_tokenizer, surface_forms

_log = logging.getLogger(__name__)
_DEFAULT_INDEX_SPEC = IndexSpec()

TOKENIZER_FILE = "tokenizer.json"
VOCAB_META_FILE = "vocab.json"
INDEX_SPEC_KEY = "index_spec"
"""vocab.json: the `IndexSpec` the index was built from, as asked (the index's own records what the build resolved)."""


class VocabularyError(ZettError, ValueError):
  """A vocabulary directory or build request that cannot work; names the path and problem."""


def _merge_pairs(merges) -> list[tuple[str, ...]]:
  return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def train_bpe_vocabulary(
  texts: Iterable[str],
  target_vocab_size: int,
  base: Tokenizer | str,
  min_frequency: int = 2,
  max_token_length: int = 32,
  multi_word: bool = False,
) -> Tokenizer:
  """Trains a byte-level BPE vocabulary with the base vocabulary forced in.

  The base's own pipeline (normalizer, pre-tokenizer, decoder, special tokens) is kept, every base
  token keeps its base id, and the trained merges not already in the base are appended in training
  order until the vocabulary reaches `target_vocab_size` (fewer when the text does not yield
  enough new tokens). Appending in merge order keeps it a valid BPE: a merge's parts always come
  before it.

  Args:
    texts: the training corpus (an iterable of documents).
    target_vocab_size: total size wanted, base tokens and specials included.
    base: the base tokenizer (must be a byte-level BPE, like GPT-2, Llama 3, SmolLM2, Qwen).
    multi_word: split text only at line ends (not at spaces), so tokens may span several words.
      A corpus has far fewer distinct words than a million, so a million-token vocabulary needs
      this (160 MB of Python source gives ~290k tokens within words, min_frequency=2).
  """
  base = load_tokenizer(base)
  state = json.loads(base.backend.to_str())
  if state["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(state.get("pre_tokenizer")):
    raise VocabularyError(
      f"{base.name}: forcing a base vocabulary into a trained BPE needs a byte-level BPE base "
      f"(got {state['model']['type']}); pass an existing tokenizer instead"
    )
  base_vocab: dict[str, int] = state["model"]["vocab"]
  if target_vocab_size <= base.vocab_size:
    raise VocabularyError(f"target_vocab_size {target_vocab_size} is not larger than the base's {base.vocab_size}")

  if multi_word:
    state["pre_tokenizer"] = json.loads(
      tokenizers.pre_tokenizers.Sequence(
        [
          tokenizers.pre_tokenizers.Split("\n", "merged_with_previous"),
          tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
      ).__getstate__()
    )
  training = dict(state, added_tokens=[], post_processor=None)
  training["model"] = dict(state["model"], vocab={}, merges=[])
  trainable = tokenizers.Tokenizer.from_str(json.dumps(training))
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=target_vocab_size,
    min_frequency=min_frequency,
    show_progress=False,
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    max_token_length=max_token_length,
  )
  trainable.train_from_iterator(texts, trainer)
  trained = json.loads(trainable.to_str())["model"]

  vocab = dict(base_vocab)
  next_id = max([*base_vocab.values(), *(t["id"] for t in state.get("added_tokens", []))]) + 1
  base_merges = _merge_pairs(state["model"]["merges"])
  merges, known = list(base_merges), set(base_merges)
  for left, right in _merge_pairs(trained["merges"]):
    if next_id >= target_vocab_size:
      break
    merged = left + right
    if (left, right) in known or left not in vocab or right not in vocab:
      continue
    if merged not in vocab:
      vocab[merged] = next_id
      next_id += 1
    merges.append((left, right))
    known.add((left, right))
  state["model"] = dict(state["model"], vocab=vocab, merges=[list(m) for m in merges])
  backend = tokenizers.Tokenizer.from_str(json.dumps(state))
  return from_backend(backend, f"bpe{len(vocab)}+{base.name}", roles=dict(base.roles), add_bos=base.add_bos)


def _fvt_embed_fn(
  table_vd: np.ndarray, surface_ids: np.ndarray, surface_lengths: np.ndarray, special_base_ids: np.ndarray
):
  """Mean of subtoken rows (FVT); specials copy their base row."""

  def embed(token_range: range) -> np.ndarray:
    ids = surface_ids[token_range.start : token_range.stop]
    lengths = surface_lengths[token_range.start : token_range.stop]
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
    rows = (table_vd[ids] * mask[..., None]).sum(1) / np.maximum(lengths, 1)[:, None]
    specials = special_base_ids[token_range.start : token_range.stop]
    rows[specials >= 0] = table_vd[specials[specials >= 0]]
    return rows

  return embed


def _hypernet_embed_fns(hypernetwork, base_embeddings, surface, batch_size: int):
  """(input_fn, output_fn or None) predicting with the hypernetwork one store chunk at a time."""
  from zett.hypernet.vocabulary import embed_vocabulary

  cache: dict[int, Embeddings] = {}

  def predicted(token_range: range):
    # Input and output stores are filled in separate passes; keep one chunk so a pass is one prediction.
    if token_range.start not in cache:
      cache.clear()
      rows = slice(token_range.start, token_range.stop)
      cache[token_range.start] = embed_vocabulary(
        hypernetwork,
        base_embeddings,
        surface.ids[rows],
        surface.lengths[rows],
        surface.special_base_ids[rows],
        chunk_size=batch_size,
        vocab_size=int(surface.lengths.shape[0]),
      )
    return cache[token_range.start]

  def input_fn(token_range: range) -> np.ndarray:
    return predicted(token_range).input

  def output_fn(token_range: range) -> np.ndarray:
    rows = predicted(token_range).output
    assert rows is not None  # used only when the hypernetwork predicts output embeddings
    return rows

  return input_fn, output_fn if hypernetwork.config.predict_output_embeddings else None


def sample_hidden_states(model, num_sequences: int = 4, length: int = 128, seed: int = 0) -> np.ndarray:
  """Final hidden states [num_sequences * length, D] of the base model on random base-token sequences.

  Only their per-dimension scale is used (to weight the ANN index); the "massive" dimensions of LM
  hidden states come from the network, not the text, so random tokens show them as real text does.
  """
  import jax.numpy as jnp

  ids = np.random.default_rng(seed).integers(0, model.config.vocab_size, size=(num_sequences, length))
  out = model.module.apply({"params": model.params}, input_ids=jnp.asarray(ids, jnp.int32), compute_logits=False)
  return np.asarray(out.hidden_states, np.float32).reshape(-1, model.config.hidden_size)


def build_vocabulary(
  out_dir: str | os.PathLike,
  model,
  tokenizer: Tokenizer | str,
  hypernet=None,
  batch_size: int = 4096,
  index_spec: IndexSpec | None = _DEFAULT_INDEX_SPEC,
  query_sample: np.ndarray | None = None,
  progress: bool = True,
) -> Path:
  """Predicts a vocabulary's embeddings for `model` into stores, and indexes the scored store.

  Args:
    out_dir: vocabulary directory (created; an interrupted build resumes).
    model: the base `BaseModel` (its tokenizer spells the target tokens).
    tokenizer: the large vocabulary (a Tokenizer, or anything `load_tokenizer` reads).
    hypernet: anything `hypernet.load_hypernetwork` takes (checked against `model`), or None for the
      mean-of-subtokens (FVT) heuristic.
    batch_size: tokens per prediction batch (= store chunk).
    index_spec: ANN index to build over the output embeddings (None: no index). An index already built from
      another spec is rebuilt (the embeddings are kept).
    query_sample: base-model hidden states [N, D] that set the index's query scale (default:
      `sample_hidden_states(model)`).
  """
  tokenizer = load_tokenizer(tokenizer)
  base_tokenizer = model.tokenizer
  if base_tokenizer is None:
    raise VocabularyError(f"{model.name}: the base model has no tokenizer")
  if hypernet is not None:
    from zett.hypernet.record import load_hypernetwork

    hypernet = load_hypernetwork(hypernet, model)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)  # only once the inputs load: a failed start leaves no empty folder
  sha = vocabulary_sha256(tokenizer.vocab_bytes)
  meta_path = out / VOCAB_META_FILE
  meta = {
    "vocab_size": tokenizer.vocab_size,
    "vocab_sha256": sha,
    "base_model": model.name,
    "base_weights_sha256": model.weights_sha256,
    "embeddings": "hypernetwork" if hypernet is not None else "fvt-mean",
  }
  recorded = _read_meta(meta_path) if meta_path.exists() else {}
  if recorded and {key: recorded.get(key) for key in meta} != meta:
    raise VocabularyError(f"{meta_path}: this directory holds another vocabulary build; use a new directory")
  tokenizer.backend.save(str(out / TOKENIZER_FILE))
  meta_path.write_text(json.dumps({**recorded, **meta}, indent=1))

  from zett.hypernet.published_config import PublishedHypernetConfig

  config = hypernet.config if hypernet is not None else None
  if isinstance(config, PublishedHypernetConfig) and config.surface_tokenizer:  # it spells with its own tokenizer
    from zett.tokenization.published_surface import spell_like_zett_authors

    surface = spell_like_zett_authors(
      tokenizer, config.surface_tokenizer, config.surface_length, config.base_vocab_size
    )
  else:
    surface = surface_forms(tokenizer, base_tokenizer)
  base = model.embeddings
  dim = int(base.input.shape[1])
  if hypernet is not None:
    input_fn, output_fn = _hypernet_embed_fns(hypernet, base, surface, batch_size)
  else:
    args = (surface.ids, surface.lengths, surface.special_base_ids)
    input_fn = _fvt_embed_fn(np.asarray(base.input, np.float32), *args)
    output_fn = None if base.output is None else _fvt_embed_fn(np.asarray(base.output, np.float32), *args)
  stores = {
    "input": build_store(
      out / "input", tokenizer.vocab_size, dim, input_fn, sha, batch_size, progress, description="input embeddings"
    )
  }
  if output_fn is not None:
    stores["output"] = build_store(
      out / "output", tokenizer.vocab_size, dim, output_fn, sha, batch_size, progress, description="output embeddings"
    )
  if base.bias is not None:
    # The bias is [V] floats: small enough to compute whole (mean of subtoken biases, or the hypernetwork's).
    bias = _fvt_embed_fn(
      np.asarray(base.bias, np.float32)[:, None], surface.ids, surface.lengths, surface.special_base_ids
    )(range(tokenizer.vocab_size))[:, 0]
    np.save(out / "bias.npy", bias.astype(np.float32))
  if index_spec is not None:
    scored = stores.get("output", stores["input"])
    changes = _index_spec_changes(scored, index_spec, recorded.get(INDEX_SPEC_KEY))
    if changes is None or changes:
      if changes:
        _log.info("%s: rebuilding the ANN index for the new index spec (%s)", scored.path, ", ".join(changes))
      if query_sample is None:
        query_sample = sample_hidden_states(model)
      build_index(scored, index_spec, bias_v=_load_bias(out), query_sample=query_sample, progress=progress).save(
        scored.path
      )
      meta_path.write_text(json.dumps({**meta, INDEX_SPEC_KEY: dataclasses.asdict(index_spec)}, indent=1))
  return out


def _index_spec_changes(scored: EmbeddingStore, spec: IndexSpec, recorded: dict | None) -> list[str] | None:
  """How `spec` differs from the one the index over `scored` was built from (`[]`: not at all), or None when there
  is no index for this vocabulary yet."""
  try:
    built = load_index(scored)
  except IndexMismatchError:
    return None
  built.close()
  ignored: set[str] = set()
  try:
    was = dataclasses.asdict(IndexSpec(**recorded)) if recorded is not None else None
  except (TypeError, ValueError):
    return [f"{VOCAB_META_FILE} records no readable index spec"]
  if was is None:  # built before vocab.json recorded the spec: the index's own, less what the build resolved
    was = dataclasses.asdict(built.spec)
    ignored = {"shards"} if spec.shards == 0 else set()
    if (built.calibration or {}).get("candidates"):
      ignored.add("candidates")
  wanted = dataclasses.asdict(spec)
  return [
    f"{key} {was.get(key)!r} -> {value!r}"
    for key, value in wanted.items()
    if key not in ignored and was.get(key) != value
  ]


def _load_bias(directory: Path) -> np.ndarray | None:
  path = directory / "bias.npy"
  return np.load(path) if path.exists() else None


def _read_meta(path: Path) -> dict:
  """vocab.json, or a VocabularyError naming the file when it is not the JSON object a build writes."""
  try:
    meta = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise VocabularyError(f"{path}: not valid JSON ({error}); rebuild the vocabulary directory") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("vocab_sha256"), str):
    raise VocabularyError(f"{path}: not a vocabulary description (no vocab_sha256); rebuild the vocabulary directory")
  return meta


def open_vocabulary_stores(
  directory: str | os.PathLike,
) -> tuple[Tokenizer, EmbeddingStore, EmbeddingStore, np.ndarray | None, dict]:
  """(tokenizer, input store, scored output store, bias or None, vocab.json) of a vocabulary directory."""
  directory = Path(directory)
  meta_path = directory / VOCAB_META_FILE
  if not meta_path.is_file():
    raise VocabularyError(
      f"{directory}: not a vocabulary directory (no {VOCAB_META_FILE}); build it with zett.ann.build.build_vocabulary"
    )
  meta = _read_meta(meta_path)
  tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
  sha = vocabulary_sha256(tokenizer.vocab_bytes)
  input_store = EmbeddingStore(directory / "input")
  output_store = EmbeddingStore(directory / "output") if (directory / "output").exists() else input_store
  for store in (input_store, output_store):
    if store.vocab_sha256 != sha or meta["vocab_sha256"] != sha:
      raise VocabularyError(f"{store.path}: holds embeddings for another vocabulary than {directory / TOKENIZER_FILE}")
  return tokenizer, input_store, output_store, _load_bias(directory), meta
