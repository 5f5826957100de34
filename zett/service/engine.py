"""The loaded model behind the service: base model + hypernetwork + embedding cache, and the request batcher.

`Engine` is synchronous and thread-safe (one lock around the cache); `EmbeddingBatcher` sits in the
event loop and merges the token lists of concurrent requests into one `Engine.embed` call, which
runs in a worker thread so the loop keeps accepting requests while the device works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import zett.hypernet as hypernet  # not `from zett import hypernet`: pyright resolves only the dotted name
from zett.dynamic.cache import EmbeddingCache
from zett.errors import ZettError
from zett.hypernet.vocabulary import MIN_CHUNK_ROWS, chunk_rows
from zett.models.family import Embeddings
from zett.tokenization import SurfaceEncoder, Tokenizer, load_tokenizer
from zett.tokenization.surface import pack_rows

# Rows per hypernetwork call: a call has a fixed cost (dispatch, host copies) that dominates for small hypernetworks,
# so a request's tokens go in one call up to this many, padded to a power of two (`hypernet.vocabulary.chunk_rows`).
_MAX_CHUNK_ROWS = 4096


class EngineError(ZettError, ValueError):
  """A request the engine cannot serve (no base tokenizer)."""


class EmbeddingRows(NamedTuple):
  """Predicted embeddings of K tokens: input [K, D], output [K, D] or None (tied), bias [K] or None."""

  input: np.ndarray
  output: np.ndarray | None
  bias: np.ndarray | None


class Engine:
  """A base model with its hypernetwork, ready to embed token strings.

  Args:
    model: the frozen base (`zett.models.base.BaseModel`); its tokenizer spells target tokens.
    hypernetwork: anything `hypernet.load_hypernetwork` takes (checked against `model`).
    cache_size: entries of the LRU cache of predicted rows.
    tokenizer: the base tokenizer, if `model.tokenizer` is None (anything `zett.tokenization.load_tokenizer`
      takes: a `Tokenizer`, a `tokenizers.Tokenizer`, a transformers fast tokenizer, a file).
  """

  def __init__(self, model, hypernetwork, cache_size: int = 8192, tokenizer=None):
    self.model = model
    self.hypernetwork = hypernet.load_hypernetwork(hypernetwork, model)
    self.base: Embeddings = jax.tree_util.tree_map(jnp.asarray, model.embeddings)
    if tokenizer is None and model.tokenizer is None:
      raise EngineError(f"model {model.name} has no tokenizer; pass the base tokenizer")
    self.tokenizer: Tokenizer = load_tokenizer(tokenizer) if tokenizer is not None else model.tokenizer
    self._encoder = SurfaceEncoder(self.tokenizer)
    self._special_by_bytes = {self.tokenizer.token_bytes(i): i for i in self.tokenizer.special_ids}
    self.embedding_dim = int(self.base.input.shape[1])
    self.has_output = self.hypernetwork.config.predict_output_embeddings
    self.has_bias = self.hypernetwork.config.predict_output_bias
    self.cache = EmbeddingCache(cache_size)
    self._cache_lock = threading.Lock()

  # --- spelling tokens in base subtokens -------------------------------------------------------

  def surface_forms(self, tokens: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids int32 [K, L], lengths int32 [K], special_base_ids int32 [K], -1 = not special).

    A token whose bytes are a base special token's content keeps that token's embedding; any other
    token is spelled by the base tokenizer's model (`zett.tokenization.SurfaceEncoder`) and cut to L.
    """
    special = np.fromiter((self._special_by_bytes.get(t, -1) for t in tokens), np.int32, count=len(tokens))
    pieces = [t if s < 0 else self.tokenizer.token_bytes(int(s)) for t, s in zip(tokens, special)]
    rows = self._encoder.encode_ids(pieces)
    for k in np.flatnonzero(special >= 0):
      rows[k] = [int(special[k])]
    ids, lengths, _ = pack_rows(rows, self.hypernetwork.config.surface_length)
    return ids, lengths, special

  # --- prediction ------------------------------------------------------------------------------

  def predict(self, tokens: Sequence[bytes]) -> EmbeddingRows:
    """Embeddings of `tokens`, bypassing the cache (`hypernet.embed_vocabulary`, one call per 4096 tokens)."""
    out = hypernet.embed_vocabulary(
      self.hypernetwork, self.base, *self.surface_forms(tokens), chunk_size=_MAX_CHUNK_ROWS
    )
    return EmbeddingRows(*out)

  def batch_rows(self, num_tokens: int) -> int:
    """Rows of each hypernetwork call for `num_tokens` tokens."""
    return chunk_rows(num_tokens, _MAX_CHUNK_ROWS)

  def _packed(self, tokens: list[bytes]) -> np.ndarray:
    """[K, D (+D) (+1)]: one cache row per token holds input, output and bias side by side."""
    rows = self.predict(tokens)
    return np.concatenate([r if r.ndim == 2 else r[:, None] for r in rows if r is not None], axis=1)

  def embed(self, tokens: Sequence[bytes]) -> tuple[EmbeddingRows, int]:
    """Embeddings of `tokens` through the LRU cache; returns (rows, cache hits among them)."""
    with self._cache_lock:
      hits_before = self.cache.hits
      packed = self.cache.lookup_or_compute(list(tokens), self._packed)
      hits = self.cache.hits - hits_before
    return self._unpack(packed, len(tokens)), hits

  def _unpack(self, packed: np.ndarray, count: int) -> EmbeddingRows:
    d = self.embedding_dim
    if count == 0:
      packed = np.zeros((0, d * (1 + self.has_output) + self.has_bias), np.float32)
    return EmbeddingRows(
      packed[:, :d], packed[:, d : 2 * d] if self.has_output else None, packed[:, -1] if self.has_bias else None
    )

  def warm_up(self, max_rows: int = MIN_CHUNK_ROWS) -> None:
    """Compiles every shape a request of up to `max_rows` tokens can take (a row count by the longest spelling among
    its tokens), so no request pays for a compilation."""
    surface_length = self.hypernetwork.config.surface_length
    rows = MIN_CHUNK_ROWS
    while True:
      for length in range(1, surface_length + 1):
        hypernet.embed_vocabulary(
          self.hypernetwork,
          self.base,
          np.zeros((rows, surface_length), np.int32),
          np.full((rows,), length, np.int32),
          chunk_size=_MAX_CHUNK_ROWS,
        )
      if rows >= min(max_rows, _MAX_CHUNK_ROWS):
        break
      rows *= 2


@dataclasses.dataclass
class _Pending:
  tokens: list[bytes]
  future: asyncio.Future


class EmbeddingBatcher:
  """Merges concurrent embedding requests into one hypernetwork call (asyncio micro-batching).

  A request's tokens wait in a queue; one consumer task takes everything queued (up to
  `max_batch_tokens` tokens, optionally waiting up to `wait_s` for more after the first), calls
  `Engine.embed` once in a worker thread for the union, and splits the rows back. While a call
  runs, new requests queue up and go into the next one, so the batch grows with the load.

  With `enabled=False` every request makes its own `Engine.embed` call (the baseline).
  """

  def __init__(
    self, engine: Engine, max_batch_tokens: int = 1024, wait_s: float = 0.0, enabled: bool = True, on_batch=None
  ):
    self.engine = engine
    self.max_batch_tokens = max_batch_tokens
    self.wait_s = wait_s
    self.enabled = enabled
    self._on_batch = on_batch  # (num_requests, num_tokens, cache_hits) -> None, for metrics
    self._queue: asyncio.Queue[_Pending] | None = None
    self._task: asyncio.Task | None = None

  async def start(self) -> None:
    if self.enabled and self._task is None:
      self._queue = asyncio.Queue()
      self._task = asyncio.create_task(self._run(), name="zett-embedding-batcher")

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
      self._task = None

  async def embed(self, tokens: list[bytes]) -> EmbeddingRows:
    """Rows of `tokens` (cache hits and misses alike)."""
    if not self.enabled or self._queue is None:
      rows, hits = await asyncio.to_thread(self.engine.embed, tokens)
      if self._on_batch:
        self._on_batch(1, len(tokens), hits)
      return rows
    future = asyncio.get_running_loop().create_future()
    await self._queue.put(_Pending(tokens, future))
    return await future

  async def _run(self) -> None:
    queue = self._queue
    assert queue is not None  # start() makes it before it starts this task
    carry: _Pending | None = None
    while True:
      first = carry if carry is not None else await queue.get()
      carry = None
      batch, total = [first], len(first.tokens)
      deadline = time.monotonic() + self.wait_s
      while total < self.max_batch_tokens:
        try:
          item = queue.get_nowait()
        except asyncio.QueueEmpty:
          if self.wait_s <= 0:
            break
          remaining = deadline - time.monotonic()
          if remaining <= 0:
            break
          try:
            item = await asyncio.wait_for(queue.get(), remaining)
          except TimeoutError:
            break
        if total + len(item.tokens) > self.max_batch_tokens:
          carry = item  # starts the next batch, so no request waits behind an ever-full batch
          break
        batch.append(item)
        total += len(item.tokens)
      batch = [p for p in batch if not p.future.done()]  # cancelled clients (timeouts) drop out
      if not batch:
        continue
      await self._serve(batch)

  async def _serve(self, batch: list[_Pending]) -> None:
    keys = [t for p in batch for t in p.tokens]
    try:
      rows, hits = await asyncio.to_thread(self.engine.embed, keys)
    except Exception as error:  # each waiting request gets the error, the batcher keeps running
      for p in batch:
        if not p.future.done():
          p.future.set_exception(error)
      return
    if self._on_batch:
      self._on_batch(len(batch), len(keys), hits)
    start = 0
    for p in batch:
      stop = start + len(p.tokens)
      part = EmbeddingRows(
        rows.input[start:stop],
        None if rows.output is None else rows.output[start:stop],
        None if rows.bias is None else rows.bias[start:stop],
      )
      if not p.future.done():
        p.future.set_result(part)
      start = stop
