"""How an ANN index is built: `IndexSpec`, and the norm-band layout and faiss factory string a spec implies.

`zett.ann.index` explains why the default is a product-quantized scan in norm bands; `zett.ann.index_build` builds
the bands this module lays out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_MIN_BAND_ROWS = 1024
"""Smaller norm bands merge into their neighbour: each band trains its own 16-centroid codebooks."""


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """How to build the index. Defaults are the configuration chosen in bench/million_vocab.py."""

  kind: str = "pq"
  """"pq" (exhaustive 4-bit product-quantized scan in norm bands, SIMD "fast scan", inner product),
  "hnsw" (graph, inner product), "hnsw-l2" (graph, L2 over norm-augmented vectors),
  "ivf" (inverted lists, inner product) or "flat" (exact, for reference)."""
  storage: str = "SQfp16"
  """faiss vector codec inside hnsw/ivf indexes: "Flat" (float32), "SQfp16", "SQ8"."""
  pq_bands: tuple[tuple[float, int, float], ...] = ((0.05, 1, 0.5), (0.15, 1, 0.25), (0.4, 4, 0.125), (1.0, 8, 0.125))
  """"pq": norm bands, longest rows first, as (cumulative fraction of rows, dimensions per 4-bit
  code, share of the candidates). Measured at 1M x 576 on SmolLM2 states with 1024 candidates:
  recall@1 0.996 with 29% of the codes of a single band with one code per dimension (0.973 there)."""
  pq_layout: str = "auto"
  """"pq": "auto" (chosen by measurement, see `pq_min_recall`), "bands" or "one band"."""
  pq_min_recall: float = 0.99
  """"pq": what `build_index` aims for on its query sample. It builds both the norm-banded layout and
  one band at the finest code, measures recall@1 against exact search on (up to 256 of) the sample
  at 1x, 2x and 4x `candidates`, keeps the layout with the higher recall at 1x (ties: the bands, a
  third of the codes), then the fewest candidates reaching this recall (else the best of the three).
  Bands win where winners are long rows (SmolLM2 + FVT rows at 1M); one band wins at 100k, where
  base tokens of every length win (bands 0.75 there). `AnnIndex.calibration` records the numbers."""
  shards: int = 0
  """"pq": each band is split into this many shards searched on parallel threads (0: one per CPU
  core, at most 8; resolved when the index is built)."""
  hnsw_neighbors: int = 32
  """"hnsw", "hnsw-l2": graph neighbours per node (faiss M)."""
  hnsw_ef_construction: int = 100
  """"hnsw", "hnsw-l2": candidate list length while building the graph."""
  hnsw_ef_search: int = 256
  """"hnsw", "hnsw-l2": candidate list length while searching (`AnnIndex.set_search_effort` changes it)."""
  ivf_lists: int = 0
  """"ivf": inverted lists; 0 = about 4 * sqrt(V)."""
  ivf_probe: int = 32
  """"ivf": lists searched per query."""
  candidates: int = 1024
  """Candidates fetched per query (split evenly over the norm bands) and rescored exactly."""

  def __post_init__(self):
    if self.kind not in ("pq", "hnsw", "hnsw-l2", "ivf", "flat"):
      raise ValueError(f"IndexSpec.kind must be pq, hnsw, hnsw-l2, ivf or flat, got {self.kind!r}")
    if self.storage not in ("Flat", "SQfp16", "SQ8"):
      raise ValueError(f"IndexSpec.storage must be Flat, SQfp16 or SQ8, got {self.storage!r}")
    # Tuples even when read back from JSON lists, so a loaded spec equals the built one.
    try:
      bands = tuple((float(fraction), int(per_code), float(share)) for fraction, per_code, share in self.pq_bands)
    except (TypeError, ValueError):
      bands = ()
    object.__setattr__(self, "pq_bands", bands)
    fractions = [band[0] for band in bands]
    if (
      not bands
      or fractions[-1] != 1.0
      or any(b <= a for a, b in zip([0.0] + fractions, fractions))
      or any(per_code < 1 or share <= 0 for _, per_code, share in bands)
    ):
      raise ValueError(
        f"IndexSpec.pq_bands must be (fraction, dims per code >= 1, candidate share > 0) with "
        f"fractions rising to 1.0, got {self.pq_bands!r}"
      )
    if self.pq_layout not in ("auto", "bands", "one band"):
      raise ValueError(f"IndexSpec.pq_layout must be auto, bands or one band, got {self.pq_layout!r}")
    if not 0.0 <= self.pq_min_recall <= 1.0:
      raise ValueError(f"IndexSpec.pq_min_recall must be in [0, 1], got {self.pq_min_recall}")
    if self.shards < 0 or self.candidates < 1:
      raise ValueError(f"IndexSpec.shards must be >= 0 and candidates >= 1, got {self.shards}, {self.candidates}")


def _band_layout(spec: IndexSpec, vocab_size: int) -> list[tuple[int, int, int, float]]:
  """(start, stop, dims per code, candidate share) over rows sorted longest first.

  Bands under _MIN_BAND_ROWS merge into a neighbour (finest code, summed share).
  """
  if spec.kind != "pq":
    return [(0, vocab_size, 1, 1.0)]
  layout: list[list] = []
  start = 0
  for fraction, per_code, share in spec.pq_bands:
    stop = vocab_size if fraction == 1.0 else int(round(fraction * vocab_size))
    if stop <= start:
      continue
    if layout and layout[-1][1] - layout[-1][0] < _MIN_BAND_ROWS:
      layout[-1][1:] = [stop, min(layout[-1][2], per_code), layout[-1][3] + share]
    else:
      layout.append([start, stop, per_code, share])
    start = stop
  if len(layout) > 1 and layout[-1][1] - layout[-1][0] < _MIN_BAND_ROWS:
    tail = layout.pop()
    layout[-1][1:] = [tail[1], min(layout[-1][2], tail[2]), layout[-1][3] + tail[3]]
  return [tuple(band) for band in layout]


def _single_band(spec: IndexSpec, vocab_size: int) -> list[tuple[int, int, int, float]]:
  return [(0, vocab_size, min(per_code for _, per_code, _ in spec.pq_bands), 1.0)]


def _factory(spec: IndexSpec, dim: int, pq_dims_per_code: int, vocab_size: int) -> tuple[str, int]:
  import faiss

  codec = "" if spec.storage == "Flat" else f"_{spec.storage}"
  if spec.kind == "pq":
    return f"PQ{dim // pq_dims_per_code}x4fs", faiss.METRIC_INNER_PRODUCT
  if spec.kind == "hnsw":
    return f"HNSW{spec.hnsw_neighbors}{codec}", faiss.METRIC_INNER_PRODUCT
  if spec.kind == "hnsw-l2":
    return f"HNSW{spec.hnsw_neighbors}{codec}", faiss.METRIC_L2
  if spec.kind == "ivf":
    lists = spec.ivf_lists or max(1, int(4 * np.sqrt(vocab_size)))
    return f"IVF{lists},{spec.storage}", faiss.METRIC_INNER_PRODUCT
  return "Flat", faiss.METRIC_INNER_PRODUCT
