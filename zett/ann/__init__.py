"""Million-token vocabularies: predicted output embeddings behind an approximate-nearest-neighbour index.

`store` keeps a [V, D] float16 table on disk (memory-mapped, resumable build); `index` finds the
maximum-inner-product candidates for a hidden state and rescores them exactly (`index_spec` says how
to build one, `index_build` builds it); `build` makes a large vocabulary and fills its stores with
hypernetwork predictions; `generate` decodes with it.
"""

from zett.ann.index import AnnIndex, IndexMismatchError, exact_topk, load_index, rescore
from zett.ann.index_build import build_index, query_scale_from
from zett.ann.index_spec import IndexSpec
from zett.ann.store import EmbeddingStore, StoreError, StoreManifest, build_store, store_exists, vocabulary_sha256

__all__ = [
  "AnnIndex",
  "EmbeddingStore",
  "IndexMismatchError",
  "IndexSpec",
  "StoreError",
  "StoreManifest",
  "build_index",
  "build_store",
  "exact_topk",
  "load_index",
  "query_scale_from",
  "rescore",
  "store_exists",
  "vocabulary_sha256",
]
