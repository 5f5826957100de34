"""Heuristic embedding initialisers that tokenizer transfer is compared against.

Every method sees the target vocabulary the same way the hypernetwork does: each target token spelled
in base-vocabulary subtokens (`surface_ids` [V, L], `surface_lengths` [V]) plus `special_base_ids` [V]
(>= 0: a special token that copies that base row). A token whose spelling is one base subtoken is
*identical* to that base token (same bytes), which is what "overlap" means below.

- `fvt`: Fast Vocabulary Transfer: the mean of the base embeddings of the token's decomposition.
- `mean`: every token gets the mean of all base embeddings (the trivial baseline).
- `lexical`: tokens identical to a base token copy its embedding; all others get the mean of all base
  embeddings.
- `random`: every token is drawn from a normal distribution with the per-dimension mean and standard
  deviation of the base embeddings (matched statistics).
- `focus`: FOCUS-style: identical tokens copy; each other token is a sparsemax-weighted sum of the
  embeddings of the overlapping tokens, weighted by cosine similarity of FVT vectors (standing in for
  FOCUS's auxiliary fastText space), restricted to the `focus_top_k` most similar overlapping tokens.

Special tokens take the base model's embeddings in every method. Output embeddings (untied bases) and
the output bias (bases that have one) are built by the same rule as the input embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from zett.models.family import Embeddings

BASELINE_METHODS = ("fvt", "mean", "lexical", "random", "focus")

Embedder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Embeddings]
"""(surface_ids [B, L], surface_lengths [B], special_base_ids [B], row_indices [B]) -> Embeddings of B rows."""


def _matrices(base: Embeddings) -> list:
  """The vocabulary-sized matrices of `base` that exist, bias as a [V, 1] column so all share one code path."""
  out = [base.input, base.output]
  bias = None if base.bias is None else jnp.reshape(base.bias, (-1, 1))
  return [m for m in out if m is not None] + ([bias] if bias is not None else [])


def _as_embeddings(base: Embeddings, rows: list) -> Embeddings:
  it = iter(rows)
  inp = next(it)
  out = next(it) if base.output is not None else None
  bias = next(it)[:, 0] if base.bias is not None else None
  return Embeddings(inp, out, bias)


def _copy_specials(rows, base_matrix, special_base_ids):
  is_special = special_base_ids >= 0
  src = jnp.clip(special_base_ids, 0, base_matrix.shape[0] - 1)
  return jnp.where(is_special[:, None], jnp.take(base_matrix, src, axis=0).astype(jnp.float32), rows)


def _decomposition_mean(matrix_vd, surface_ids, surface_lengths):
  """Mean of the rows of each token's subtokens ([B, D]); padding rows (length 0) give zeros."""
  mask = (jnp.arange(surface_ids.shape[1])[None, :] < surface_lengths[:, None]).astype(jnp.float32)
  rows = jnp.take(matrix_vd, jnp.clip(surface_ids, 0, matrix_vd.shape[0] - 1), axis=0).astype(jnp.float32)
  return jnp.einsum("bl,bld->bd", mask, rows) / jnp.maximum(mask.sum(-1), 1.0)[:, None]


@jax.jit
def _fvt(base: Embeddings, surface_ids, surface_lengths, special_base_ids):
  return _as_embeddings(
    base,
    [
      _copy_specials(_decomposition_mean(m, surface_ids, surface_lengths), m, special_base_ids) for m in _matrices(base)
    ],
  )


def fvt(base: Embeddings, surface_ids, surface_lengths, special_base_ids) -> Embeddings:
  """FVT embeddings for a batch of target tokens (linear in the base embeddings; see `zett.apply`)."""
  return _fvt(base, jnp.asarray(surface_ids), jnp.asarray(surface_lengths), jnp.asarray(special_base_ids))


@jax.jit
def _lexical(base: Embeddings, means, surface_ids, surface_lengths, special_base_ids, use_overlap):
  identical = use_overlap & (surface_lengths == 1)
  out = []
  for m, mean in zip(_matrices(base), means):
    copied = jnp.take(m, jnp.clip(surface_ids[:, 0], 0, m.shape[0] - 1), axis=0).astype(jnp.float32)
    rows = jnp.where(identical[:, None], copied, jnp.broadcast_to(mean, copied.shape))
    out.append(_copy_specials(rows, m, special_base_ids))
  return _as_embeddings(base, out)


@jax.jit
def _random(base: Embeddings, means, stds, key, special_base_ids, row_indices):
  out = []
  for i, (m, mean, std) in enumerate(zip(_matrices(base), means, stds)):
    # One key per (matrix, target row): results do not depend on the batch size.
    matrix_key = jax.random.fold_in(key, i)
    keys = jax.vmap(lambda r, k=matrix_key: jax.random.fold_in(k, r))(row_indices)
    noise = jax.vmap(lambda k, shape=mean.shape: jax.random.normal(k, shape, jnp.float32))(keys)
    out.append(_copy_specials(mean + std * noise, m, special_base_ids))
  return _as_embeddings(base, out)


def _sparsemax(scores_bk):
  """Sparsemax (Martins & Astudillo 2016) over the last axis: a projection onto the simplex with exact zeros."""
  z = jnp.sort(scores_bk, axis=-1)[:, ::-1]
  k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
  cumulative = jnp.cumsum(z, axis=-1)
  support = 1 + k * z > cumulative
  support_size = support.sum(-1, keepdims=True)
  tau = (jnp.take_along_axis(cumulative, support_size - 1, axis=-1) - 1) / support_size
  return jnp.maximum(scores_bk - tau, 0.0)


def _focus_fn(top_k: int):
  @jax.jit
  def focus(base: Embeddings, overlap_ids, overlap_unit_od, surface_ids, surface_lengths, special_base_ids):
    matrices = _matrices(base)
    fvt_bd = _decomposition_mean(base.input, surface_ids, surface_lengths)
    fvt_unit = fvt_bd / jnp.maximum(jnp.linalg.norm(fvt_bd, axis=-1, keepdims=True), 1e-12)
    similarity_bo = fvt_unit @ overlap_unit_od.T
    top_sim, top_index = jax.lax.top_k(similarity_bo, min(top_k, overlap_ids.shape[0]))
    weights_bk = _sparsemax(top_sim)
    source_bk = jnp.take(overlap_ids, top_index)
    identical = surface_lengths == 1
    out = []
    for m in matrices:
      mixed = jnp.einsum("bk,bkd->bd", weights_bk, jnp.take(m, source_bk, axis=0).astype(jnp.float32))
      copied = jnp.take(m, jnp.clip(surface_ids[:, 0], 0, m.shape[0] - 1), axis=0).astype(jnp.float32)
      out.append(_copy_specials(jnp.where(identical[:, None], copied, mixed), m, special_base_ids))
    return _as_embeddings(base, out)

  return focus


def overlap_base_ids(surface_ids, surface_lengths, special_base_ids) -> np.ndarray:
  """Sorted unique base ids of target tokens identical to a base token (one-subtoken, non-special)."""
  surface_ids, surface_lengths = np.asarray(surface_ids), np.asarray(surface_lengths)
  identical = (surface_lengths == 1) & (np.asarray(special_base_ids) < 0)
  return np.unique(surface_ids[identical, 0]).astype(np.int32)


def make_baseline(
  method: str, base: Embeddings, surface_ids, surface_lengths, special_base_ids, seed: int = 0, focus_top_k: int = 64
) -> Embedder:
  """A batch embedder for one baseline `method` (see the module docstring).

  The whole target vocabulary's surface forms are passed once because FOCUS needs the global overlap;
  the returned function is then called batch by batch.
  """
  if method not in BASELINE_METHODS:
    raise ValueError(f"unknown baseline method {method!r}; choose one of {', '.join(BASELINE_METHODS)}")
  base = Embeddings(*(None if m is None else jnp.asarray(m, jnp.float32) for m in base))
  matrices = _matrices(base)
  means = [m.mean(0) for m in matrices]
  if method == "fvt":
    return lambda ids, lengths, special, rows: fvt(base, ids, lengths, special)
  if method in ("mean", "lexical"):
    use_overlap = method == "lexical"
    return lambda ids, lengths, special, rows: _lexical(
      base, means, jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(special), use_overlap
    )
  if method == "random":
    stds = [m.std(0) for m in matrices]
    key = jax.random.key(seed)
    return lambda ids, lengths, special, rows: _random(
      base, means, stds, key, jnp.asarray(special), jnp.asarray(rows, jnp.int32)
    )
  overlap = overlap_base_ids(surface_ids, surface_lengths, special_base_ids)
  if overlap.size == 0:  # nothing to borrow from: FOCUS degenerates to FVT
    return lambda ids, lengths, special, rows: fvt(base, ids, lengths, special)
  overlap_rows = jnp.take(base.input, jnp.asarray(overlap), axis=0)
  overlap_unit = overlap_rows / jnp.maximum(jnp.linalg.norm(overlap_rows, axis=-1, keepdims=True), 1e-12)
  focus = _focus_fn(focus_top_k)
  return lambda ids, lengths, special, rows: focus(
    base, jnp.asarray(overlap), overlap_unit, jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(special)
  )
