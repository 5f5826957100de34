"""The tokenizer embedded in a GGUF file (`tokenizer.ggml.*` metadata) as a `Tokenizer`.

Byte-level BPE files (SmolLM2, GPT-2 style) are built straight from their tokens and merges, the same pipeline
transformers' GGUF converter builds; any other file goes through that converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

from zett.interop.gguf_header import GgufHeaderError, read_gguf_header
from zett.tokenization import byte_level
from zett.tokenization.byte_level import TokenizerError, to_byte_level
from zett.tokenization.tokenizer import Tokenizer, from_backend

_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4  # llama.cpp token types
# transformers' GPT2Tokenizer registers this as its unk/bos/eos whatever the file says, so the direct build below is
# only the same tokenizer when the file already holds it as a control token.
_GPT2_DEFAULT_SPECIAL = "<|endoftext|>"


def _gguf_byte_level_bpe(metadata: Mapping[str, Any]) -> tokenizers.Tokenizer | None:
  """The byte-level BPE (`tokenizer.ggml.model` gpt2) a GGUF describes, built straight from its tokens and merges.

  The same pipeline as transformers' GGUF converter (`convert_gguf_tokenizer`) builds, without importing transformers
  and torch or reading the file through their reader (~30 s on 2 busy cores; this takes ~1 s). None for files outside
  what it mirrors exactly (other pre-tokenizer regexes, user-defined tokens, no merges, ...): those take the converter.
  """
  tokens, merges = metadata.get("tokenizer.ggml.tokens"), metadata.get("tokenizer.ggml.merges")
  token_types = metadata.get("tokenizer.ggml.token_type")
  if metadata.get("tokenizer.ggml.model") != "gpt2" or not tokens or not merges or token_types is None:
    return None
  pre_tokenizer = metadata.get("tokenizer.ggml.pre", "default")
  if pre_tokenizer not in ("default", "gpt2", "smollm") or len(token_types) != len(tokens):
    return None
  control = [token for token, kind in zip(tokens, token_types) if kind == _GGUF_CONTROL]
  if _GGUF_USER_DEFINED in token_types or _GPT2_DEFAULT_SPECIAL not in control:
    return None
  alphabet = set(byte_level.bytes_to_unicode().values())
  if not all(set(token) <= alphabet for token in control):
    return None  # transformers skips such mislabelled control tokens; leave that rule to it
  vocab = {token if set(token) <= alphabet else to_byte_level(token.encode()): i for i, token in enumerate(tokens)}
  backend = tokenizers.Tokenizer(
    models.BPE(
      vocab=vocab,
      merges=[tuple(merge.split(" ")) for merge in merges],
      dropout=None,
      continuing_subword_prefix="",
      end_of_word_suffix="",
      fuse_unk=False,
    )
  )
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
  backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in control])
  return backend


def _gguf_converted(path: Path) -> tuple[tokenizers.Tokenizer, bool]:
  """Any other GGUF tokenizer, through transformers' converter: (pipeline, add_bos_token)."""
  try:
    # Public names of the package (its lazy __all__); pyright takes them for private imports of its submodule.
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer  # pyright: ignore[reportPrivateImportUsage]

    architecture, fields, config = get_gguf_tokenizer(str(path))
  except Exception as error:
    raise TokenizerError(f"{path}: cannot read the GGUF tokenizer fields ({error})") from None
  try:
    backend, _ = convert_gguf_tokenizer(architecture, fields)
  except Exception as error:
    raise TokenizerError(f"{path}: unsupported GGUF tokenizer {fields.get('tokenizer_type')!r} ({error})") from None
  return backend, bool(config.get("add_bos_token", False))


def load_gguf(path: str | Path) -> Tokenizer:
  """The tokenizer stored in a GGUF file's `tokenizer.ggml.*` fields, split as llama.cpp splits (see `_gguf_wrap`)."""
  path = Path(path)
  try:
    metadata = read_gguf_header(path).metadata
  except (OSError, GgufHeaderError) as error:
    raise TokenizerError(f"{path}: cannot read the GGUF tokenizer fields ({error})") from None
  if not metadata.get("tokenizer.ggml.tokens"):
    raise TokenizerError(f"{path}: the GGUF file holds no tokenizer (tokenizer.ggml.tokens is empty)")
  tokenizer = direct_gguf_tokenizer(metadata, str(path))
  if tokenizer is not None:
    return tokenizer
  backend, add_bos = _gguf_converted(path)
  return _gguf_wrap(backend, metadata, str(path), add_bos, llama_cpp_pre_tokenizer=True)


def direct_gguf_tokenizer(
  metadata: Mapping[str, Any], name: str, llama_cpp_pre_tokenizer: bool = True
) -> Tokenizer | None:
  """The byte-level BPE tokenizer a GGUF's metadata (`read_gguf_header`) describes, built without transformers.

  None where transformers' converter must build it (see `_gguf_byte_level_bpe`).
  """
  backend = _gguf_byte_level_bpe(metadata)
  if backend is None:
    return None
  add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
  return _gguf_wrap(backend, metadata, name, add_bos, llama_cpp_pre_tokenizer)


def _gguf_wrap(
  backend: tokenizers.Tokenizer, metadata: Mapping[str, Any], name: str, add_bos: bool, llama_cpp_pre_tokenizer: bool
) -> Tokenizer:
  """A GGUF's pipeline as a `Tokenizer`: control tokens special, roles from the `tokenizer.ggml.*_token_id` keys.

  `llama_cpp_pre_tokenizer` splits text as llama.cpp does where transformers does not: its "smollm" pre-tokenizer
  splits every digit first, as SmolLM2's tokenizer.json does. `zett.interop.gguf` leaves it off for the base model's
  own tokenizer, which has always been transformers' pipeline unchanged.
  """
  if llama_cpp_pre_tokenizer and metadata.get("tokenizer.ggml.pre") == "smollm":
    backend.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
  token_types = metadata.get("tokenizer.ggml.token_type")
  control = [] if token_types is None else [i for i, kind in enumerate(token_types) if kind == _GGUF_CONTROL]
  roles = {
    role: metadata.get(f"tokenizer.ggml.{key}_token_id")
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))
  }
  return from_backend(backend, name, roles, extra_special=control, add_bos=add_bos)
