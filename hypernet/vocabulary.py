"""A whole vocabulary through the hypernetwork (or any row embedder), chunk by chunk.

Rows are sorted by surface length and taken a chunk at a time, and each chunk is cut to its longest spelling (padding
never changes a prediction): a vocabulary whose tokens are mostly 1-3 subtokens long costs a fraction of a padded
pass. Every chunk of one call has the same number of rows, so a call compiles at most once per surface length.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from zett.hypernet.model import predict_jit
from zett.hypernet.record import Hypernetwork
from zett.models.family import Embeddings

MIN_CHUNK_ROWS = 16

RowEmbedder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Embeddings]
"""(surface ids int32 [R, l], lengths int32 [R], special base ids int32 [R], row indices int32 [R]) -> `Embeddings`
of the R rows. Padding rows have length 0, special id -1 and row indices from V up."""


def chunk_rows(num_rows: int, chunk_size: int) -> int:
  """Rows of every chunk for a vocabulary of `num_rows`: `chunk_size`, or for a smaller vocabulary the next power of
  two (at least 16), so that vocabularies of many sizes share a few shapes at most 2x padded."""
  rows = MIN_CHUNK_ROWS
  while rows < num_rows:
    rows *= 2
  return min(rows, chunk_size)


def embed_vocabulary(
  hypernetwork: Hypernetwork,
  base: Embeddings,
  surface_ids,
  surface_lengths,
  special_base_ids=None,
  *,
  chunk_size: int = 4096,
  progress: bool = False,
  description: str = "hypernetwork",
  dtype=jnp.float32,
  on_device: bool = False,
  vocab_size: int | None = None,
) -> Embeddings:
  """The hypernetwork's embeddings of every row of a vocabulary (see the module docstring for how it is chunked).

  Args:
    hypernetwork: from `hypernet.load_hypernetwork` (checked against the base and put on the device there).
    base: the frozen base embeddings the surface ids index.
    surface_ids, surface_lengths: int32 [V, L] and [V], the base subtokens spelling each row.
    special_base_ids: int32 [V], >= 0 where a row copies that base row unchanged; default none.
    chunk_size: the most rows one hypernetwork call embeds (bounds working memory).
    progress: show a tqdm progress bar labelled `description`.
    dtype: the hypernetwork's compute dtype (zett's own hypernetworks only).
    on_device: return device arrays (assembled on the device, sharded as the hypernetwork computed them; training
      evaluation) instead of float32 host arrays filled chunk by chunk (which never hold more than the result).
    vocab_size: size of the whole target vocabulary, for a hypernetwork with `condition_on_vocab_size` (a transfer
      passes its tokenizer's; rows embedded on the fly for an open vocabulary leave it None, the reference size).
  """

  def embed(ids, lengths, special, rows):
    return predict_jit(
      hypernetwork.config,
      hypernetwork.params,
      jnp.asarray(ids),
      jnp.asarray(lengths),
      base,
      jnp.asarray(special),
      dtype=dtype,
      vocab_size=vocab_size,
    )

  return embed_in_chunks(
    embed,
    surface_ids,
    surface_lengths,
    special_base_ids,
    chunk_size=chunk_size,
    progress=progress,
    description=description,
    on_device=on_device,
  )


def embed_in_chunks(
  embed: RowEmbedder,
  surface_ids,
  surface_lengths,
  special_base_ids=None,
  *,
  chunk_size: int = 4096,
  progress: bool = False,
  description: str = "embedding",
  on_device: bool = False,
) -> Embeddings:
  """`embed` over every row of a vocabulary, chunked as `embed_vocabulary` does (which it runs; baselines too)."""
  from tqdm.auto import tqdm

  surface_ids, lengths = np.asarray(surface_ids), np.asarray(surface_lengths)
  v = lengths.shape[0]
  special_base_ids = np.full((v,), -1, np.int32) if special_base_ids is None else np.asarray(special_base_ids)
  rows = chunk_rows(v, chunk_size)
  order = np.argsort(lengths, kind="stable")
  host, parts = None, []
  with tqdm(total=v, desc=description, unit="tok", disable=not progress) as bar:
    for start in range(0, max(v, 1), rows):  # an empty vocabulary still makes one call, for the result's shapes
      chosen = order[start : start + rows]
      n = chosen.shape[0]
      length = max(1, int(lengths[chosen[-1]])) if n else 1
      ids = np.zeros((rows, length), np.int32)
      chunk_lengths = np.zeros((rows,), np.int32)
      special = np.full((rows,), -1, np.int32)
      ids[:n], chunk_lengths[:n] = surface_ids[chosen, :length], lengths[chosen]
      special[:n] = special_base_ids[chosen]
      indices = np.concatenate([chosen, np.arange(v, v + rows - n)]).astype(np.int32)
      result = embed(ids, chunk_lengths, special, indices)
      if on_device:
        parts.append(Embeddings(*(None if x is None else x[:n] for x in result)))
      else:
        if host is None:
          host = Embeddings(*(None if x is None else np.empty((v,) + x.shape[1:], np.float32) for x in result))
        for out, x in zip(host, result):
          if out is not None:
            out[chosen] = np.asarray(x)[:n]
      bar.update(n)
  if not on_device:
    assert host is not None  # set by the first chunk, and there is always one
    return host
  inverse = np.empty((v,), np.int32)
  inverse[order] = np.arange(v, dtype=np.int32)
  return jax.tree.map(lambda *chunks: jnp.take(jnp.concatenate(chunks), inverse, axis=0), *parts)
