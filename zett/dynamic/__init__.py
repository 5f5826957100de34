"""Dynamic tokenization: batch-level BPE merging with hypernetwork embeddings for the new tokens."""

from zett.dynamic.batch import BaseBatch, MergeInputError, MergeResult
from zett.dynamic.cache import EmbeddingCache
from zett.dynamic.merge import can_merge, merge_batch
from zett.dynamic.split import split_texts, vocab_bytes

__all__ = [
  "BaseBatch",
  "EmbeddingCache",
  "MergeInputError",
  "MergeResult",
  "can_merge",
  "merge_batch",
  "split_texts",
  "vocab_bytes",
]
