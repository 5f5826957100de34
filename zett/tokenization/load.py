"""One tokenizer type for every source: Hugging Face files, SentencePiece, GGUF, tiktoken, tekken.

`load_tokenizer(spec)` returns a `Tokenizer`: a frozen wrapper around a `tokenizers.Tokenizer`
(the Rust core, so encoding is fast and `to_hf` is lossless) plus what the rest of zett needs and
the raw files do not say uniformly: which ids are special, their roles (bos/eos/pad/unk), and the
exact bytes of every vocabulary item.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers

from zett.tokenization import _formats, gguf
from zett.tokenization.byte_level import ModelKind, TokenizerError
from zett.tokenization.tokenizer import ROLES, Tokenizer, check_dense_ids, from_backend, from_transformers


def _roles_from_config(config: Mapping[str, Any]) -> dict[str, str]:
  roles = {}
  for role in ROLES:
    value = config.get(f"{role}_token")
    if isinstance(value, dict):  # serialized AddedToken
      value = value.get("content")
    if isinstance(value, str):
      roles[role] = value
  return roles


def _read_side_config(path: Path) -> dict[str, Any]:
  """A tokenizer_config.json beside the tokenizer ({} if absent); malformed is an error naming the file."""
  if not path.exists():
    return {}
  try:
    config = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise TokenizerError(f"{path}: not a valid JSON file ({error})") from None
  if not isinstance(config, dict):
    raise TokenizerError(f"{path}: expected a JSON object, got {type(config).__name__}")
  return config


def _load_tokenizer_json(path: Path, name: str) -> tokenizers.Tokenizer:
  try:
    return tokenizers.Tokenizer.from_file(str(path))
  except Exception as error:  # the Rust parser raises plain Exception subclasses
    raise TokenizerError(f"{path}: not a valid tokenizer.json ({error})") from None


def _load_hf_folder(folder: Path, name: str) -> Tokenizer:
  config = _read_side_config(folder / "tokenizer_config.json")
  roles = _roles_from_config(config)
  add_bos = bool(config.get("add_bos_token", False))
  if (folder / "tokenizer.json").exists():
    backend = _load_tokenizer_json(folder / "tokenizer.json", name)
    return from_backend(backend, name, roles, add_bos=add_bos)
  for candidate in ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model"):
    if (folder / candidate).exists():
      return _formats.load_sentencepiece(folder / candidate, name=name)
  raise TokenizerError(f"{folder}: no tokenizer.json or SentencePiece model in this folder")


def _load_hub(spec: str) -> Tokenizer:
  try:
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(spec)
  except Exception as error:
    raise TokenizerError(f"{spec!r}: not a local path and not loadable from the hub ({error})") from None
  if (getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)) is None:
    raise TokenizerError(f"{spec!r}: the hub tokenizer has no fast (tokenizers) backend")
  return from_transformers(hf, spec)


_CONVERTER_VERSION = "4"


def _cache_dir() -> Path:
  return Path(os.environ.get("ZETT_CACHE_DIR", Path.home() / ".cache" / "zett")) / "tokenizers"


def _load_converted(path: Path, convert) -> Tokenizer:
  """Convert a non-HF tokenizer file once, then reuse the tokenizer.json (conversion takes seconds)."""
  stat = path.stat()
  key = hashlib.sha256(
    f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{convert.__name__}|"
    f"{_CONVERTER_VERSION}|{tokenizers.__version__}".encode()
  ).hexdigest()[:32]
  folder = _cache_dir()
  json_path, meta_path = folder / f"{key}.json", folder / f"{key}.meta.json"
  if json_path.exists() and meta_path.exists():
    try:
      meta = json.loads(meta_path.read_text())
      backend = tokenizers.Tokenizer.from_file(str(json_path))
      backend.encode_special_tokens = meta["encode_special_tokens"]
      check_dense_ids(backend.get_vocab(with_added_tokens=True), str(json_path))
      return Tokenizer(
        backend=backend,
        name=str(path),
        kind=ModelKind(meta["kind"]),
        special_ids=frozenset(meta["special_ids"]),
        roles=meta["roles"],
        add_bos=meta["add_bos"],
      )
    except Exception:  # a damaged cache entry: convert again
      pass
  tokenizer = convert(path)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
      "kind": tokenizer.kind.value,
      "special_ids": sorted(tokenizer.special_ids),
      "roles": dict(tokenizer.roles),
      "add_bos": tokenizer.add_bos,
      "encode_special_tokens": tokenizer.backend.encode_special_tokens,
    }
    suffix = f".{os.getpid()}.tmp"
    tokenizer.backend.save(str(json_path) + suffix)
    Path(str(meta_path) + suffix).write_text(json.dumps(meta))
    os.replace(str(json_path) + suffix, json_path)
    os.replace(str(meta_path) + suffix, meta_path)
  except OSError:  # a read-only home is fine: we just convert every time
    pass
  return tokenizer


def load_tokenizer(spec: str | os.PathLike | Tokenizer | tokenizers.Tokenizer | Any) -> Tokenizer:
  """Load a tokenizer from any supported source.

  Args:
    spec: a Hugging Face folder or `tokenizer.json`; a SentencePiece `.model` (also Mistral's
      `tokenizer.model.v*` files); a `.gguf` file (its embedded tokenizer); a tiktoken `.tiktoken`
      file (Qwen's pattern and specials when the name says qwen); a Mistral tekken `.json`; a hub
      name (online only); or an already loaded `Tokenizer` / `tokenizers.Tokenizer` / `transformers`
      fast tokenizer (`from_transformers`).

  Raises:
    TokenizerError: unreadable, corrupt or unsupported input, naming the file and the problem.
  """
  if isinstance(spec, Tokenizer):
    return spec
  if isinstance(spec, tokenizers.Tokenizer):
    return from_backend(spec, "<tokenizers.Tokenizer>")
  if hasattr(spec, "backend_tokenizer"):  # a transformers fast tokenizer
    return from_transformers(spec)
  name = str(spec)
  path = Path(name)
  if path.is_dir():
    return _load_hf_folder(path, name)
  if path.is_file():
    suffixes = path.name.lower()
    if suffixes.endswith(".gguf"):
      return _load_converted(path, gguf.load_gguf)
    if suffixes.endswith(".tiktoken"):
      return _load_converted(path, _formats.load_tiktoken)
    if ".model" in suffixes:
      return _load_converted(path, _formats.load_sentencepiece)
    if suffixes.endswith(".json"):
      head = path.read_bytes()[:4096]
      if b'"config"' in head and b'"vocab"' in head and b'"model"' not in head:
        return _load_converted(path, _formats.load_tekken)
      config = _read_side_config(path.parent / "tokenizer_config.json")
      return from_backend(
        _load_tokenizer_json(path, name),
        name,
        _roles_from_config(config),
        add_bos=bool(config.get("add_bos_token", False)),
      )
    raise TokenizerError(
      f"{path}: unrecognised tokenizer file (expected tokenizer.json, .model, .gguf, .tiktoken or a tekken .json)"
    )
  from zett.interop.hub import could_be_hub_name

  if not could_be_hub_name(name):
    raise TokenizerError(f"{name}: no such file or folder")
  return _load_hub(name)
