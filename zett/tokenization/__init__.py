"""The tokenizer layer: load any tokenizer, view its vocabulary as bytes, spell tokens in base
subtokens (surface forms), and sample a fresh UnigramLM tokenizer per training batch."""

from zett.tokenization._substrings import PRETOKEN_PATTERNS
from zett.tokenization.byte_level import (
  ModelKind,
  TokenizerError,
  bytes_to_unicode,
  from_byte_level,
  printable,
  to_byte_level,
)
from zett.tokenization.load import load_tokenizer
from zett.tokenization.sampled_batch import SampledBatch
from zett.tokenization.sampler import SamplerError, TokenizerSampler
from zett.tokenization.surface import SurfaceEncoder, SurfaceForms, surface_forms
from zett.tokenization.tokenizer import ROLES, Tokenizer, from_backend, from_transformers

__all__ = [
  "ModelKind",
  "TokenizerError",
  "bytes_to_unicode",
  "from_byte_level",
  "printable",
  "to_byte_level",
  "ROLES",
  "Tokenizer",
  "from_backend",
  "from_transformers",
  "load_tokenizer",
  "PRETOKEN_PATTERNS",
  "SampledBatch",
  "SamplerError",
  "TokenizerSampler",
  "SurfaceEncoder",
  "SurfaceForms",
  "surface_forms",
]
