"""Decoding with a large vocabulary: the base model's LM head replaced by ANN search.

Each step runs the frozen base model on the new token's (predicted) input embedding with a KV
cache, takes the final hidden state `h` (the state right before the LM head), asks the index for
the top candidates by inner product, rescores them exactly (`h . e + b`), and picks greedily or
samples among them. `exact=True` scores the whole vocabulary with one matrix product instead.
The prompt is tokenized with the large vocabulary itself.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import time
from collections.abc import Iterator

import numpy as np

from zett.ann.build import open_vocabulary_stores
from zett.ann.index import AnnIndex, load_index
from zett.ann.store import EmbeddingStore
from zett.errors import ZettError
from zett.models.decoding import Decoder, DecodeTiming, Reads

_EXACT_IN_MEMORY_BYTES = 4 << 30
"""Exact scoring keeps a float32 copy of the output table up to this size, else streams the store."""


class GenerationError(ZettError, ValueError):
  """A vocabulary directory built for another model, or a prompt with nothing to generate from."""


@dataclasses.dataclass
class GenerationStats:
  """What the last `generate` call did (for benchmarks and the CLI's summary line)."""

  prompt_tokens: int = 0
  new_tokens: int = 0
  new_bytes: int = 0
  model_seconds: float = 0.0
  selection_seconds: float = 0.0
  """Time spent choosing next tokens (index search + rescoring, or the exact product)."""

  @property
  def tokens_per_second(self) -> float:
    return self.new_tokens / max(self.model_seconds + self.selection_seconds, 1e-9)


class ExactScorer:
  """Full-vocabulary `h . E^T + b` (the reference the index is measured against)."""

  def __init__(self, store: EmbeddingStore, bias_v: np.ndarray | None = None):
    self.store = store
    self.bias_v = None if bias_v is None else np.asarray(bias_v, np.float32)
    table_bytes = store.vocab_size * store.dim * 4
    self.table_vd = np.asarray(store.table, np.float32) if table_bytes <= _EXACT_IN_MEMORY_BYTES else None

  def logits(self, hidden_bd: np.ndarray) -> np.ndarray:
    """float32 [B, V]."""
    hidden_bd = np.asarray(hidden_bd, np.float32)
    if self.table_vd is not None:
      logits = hidden_bd @ self.table_vd.T
    else:
      logits = np.concatenate([hidden_bd @ rows.T for _, rows in self.store.iter_chunks(1 << 16)], axis=1)
    return logits + self.bias_v if self.bias_v is not None else logits

  def topk(self, hidden_bd: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    logits = self.logits(hidden_bd)
    if k == 1:
      ids = np.argmax(logits, axis=1)[:, None]
    else:
      part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
      ids = np.take_along_axis(part, np.argsort(-np.take_along_axis(logits, part, 1), axis=1, kind="stable"), 1)
    return np.take_along_axis(logits, ids, 1), ids


class LargeVocabGenerator:
  """Generates text with `model` and the vocabulary in a directory built by `zett.ann.build`.

  Args:
    model: the base `BaseModel` the vocabulary was built for.
    vocab_dir: the vocabulary directory.
    load_ann_index: load the ANN index (needed unless every call uses `exact=True`).
    candidates: candidates per step taken from the index and rescored exactly.
  """

  def __init__(self, model, vocab_dir: str | os.PathLike, load_ann_index: bool = True, candidates: int | None = None):
    self.model = model
    self.tokenizer, self.input_store, self.output_store, self.bias_v, self.meta = open_vocabulary_stores(vocab_dir)
    if self.input_store.dim != model.config.hidden_size:
      raise GenerationError(
        f"{vocab_dir}: embeddings have width {self.input_store.dim}, {model.name} has {model.config.hidden_size}"
      )
    if self.meta.get("base_weights_sha256") not in (None, model.weights_sha256):
      raise GenerationError(
        f"{vocab_dir}: built for base weights {self.meta['base_weights_sha256'][:12]}..., "
        f"not {model.name} ({model.weights_sha256[:12]}...)"
      )
    self.index: AnnIndex | None = load_index(self.output_store) if load_ann_index else None
    self.candidates = candidates or (self.index.spec.candidates if self.index else 64)
    self._exact: ExactScorer | None = None
    self.stats = GenerationStats()
    self._decoder = Decoder(model)

  @property
  def exact_scorer(self) -> ExactScorer:
    if self._exact is None:
      self._exact = ExactScorer(self.output_store, self.bias_v)
    return self._exact

  def select(self, hidden_bd: np.ndarray, exact: bool = False, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) [B, k] for hidden states: ANN + exact rescoring, or the full product."""
    if exact:
      return self.exact_scorer.topk(hidden_bd, k)
    if self.index is None:
      raise ValueError("no ANN index loaded (LargeVocabGenerator(load_ann_index=False)); use exact=True")
    return self.index.topk(hidden_bd, k=k, candidates=max(k, self.candidates))

  def generate_ids(
    self,
    prompt_ids: list[int],
    max_new_tokens: int = 64,
    exact: bool = False,
    temperature: float = 0.0,
    sample_top_k: int = 40,
    seed: int = 0,
    stop_at_eos: bool = True,
  ) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (token id, final hidden state [D] it was chosen from) per generated token."""
    if not prompt_ids:
      raise GenerationError("the prompt is empty after tokenization")
    if max(prompt_ids) >= self.tokenizer.vocab_size:
      raise ValueError(f"prompt id {max(prompt_ids)} is outside the vocabulary ({self.tokenizer.vocab_size})")
    eos = self.tokenizer.roles.get("eos")
    self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
    timing = DecodeTiming()
    started = time.perf_counter()
    state = self._decoder.prefill(
      embeds=self.input_store.rows(np.asarray(prompt_ids))[None], new_tokens=max_new_tokens, reads="hidden"
    )
    timing.model_seconds = time.perf_counter() - started
    choose = _IndexChoice(self, exact, temperature, sample_top_k, np.random.default_rng(seed))
    stop_ids = frozenset([eos]) if stop_at_eos and eos is not None else frozenset()
    for tokens in self._decoder.decode(
      state, max_new_tokens, choose, embed=self.input_store.rows, stop_ids=stop_ids, timing=timing
    ):
      token = int(tokens[0])
      self.stats.model_seconds, self.stats.selection_seconds = timing.model_seconds, timing.choose_seconds
      self.stats.new_tokens += 1
      self.stats.new_bytes += len(self.tokenizer.vocab_bytes[token])
      yield token, choose.hidden[0]

  def generate(
    self,
    prompt: str,
    max_new_tokens: int = 64,
    exact: bool = False,
    temperature: float = 0.0,
    sample_top_k: int = 40,
    seed: int = 0,
    add_bos: bool | None = None,
  ) -> Iterator[str]:
    """Streams the continuation of `prompt` as text pieces (whole UTF-8 characters only)."""
    prompt_ids = self.tokenizer.encode(prompt)
    bos = self.tokenizer.roles.get("bos")
    if (self.tokenizer.add_bos if add_bos is None else add_bos) and bos is not None:
      prompt_ids = [bos] + prompt_ids
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    eos = self.tokenizer.roles.get("eos")
    for token, _ in self.generate_ids(prompt_ids, max_new_tokens, exact, temperature, sample_top_k, seed):
      if token == eos:
        break
      text = decoder.decode(self.tokenizer.vocab_bytes[token])
      if text:
        yield text
    tail = decoder.decode(b"", final=True)
    if tail:
      yield tail


class _IndexChoice:
  """Next tokens from the final hidden state: greedy or top-k sampling over the index's (or the exact) candidates.
  Keeps the hidden state it chose from (`hidden`)."""

  reads: Reads = "hidden"

  def __init__(self, generator: LargeVocabGenerator, exact: bool, temperature: float, top_k: int, rng):
    self.generator, self.exact, self.temperature, self.top_k, self.rng = generator, exact, temperature, top_k, rng
    self.hidden = np.zeros((1, 0), np.float32)

  def __call__(self, last, step: int) -> np.ndarray:
    self.hidden = hidden = np.asarray(last)
    if self.temperature <= 0:
      return self.generator.select(hidden, self.exact)[1][:, 0]
    scores, ids = self.generator.select(hidden, self.exact, k=self.top_k)
    weights = np.exp((scores - scores[:, :1]) / self.temperature)
    return np.array([self.rng.choice(row_ids, p=w / w.sum()) for row_ids, w in zip(ids, weights)])
