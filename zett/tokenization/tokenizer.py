"""`Tokenizer`: the one tokenizer type of zett; `from_backend` wraps a `tokenizers.Tokenizer` in it and
`from_transformers` a `transformers` fast tokenizer (`Tokenizer.to_transformers` goes back, for exports).

Apart from `load` so that the per-format converters (`_formats`) and `load` both import it, and `load` imports the
converters, with no import cycle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from zett.tokenization import byte_level
from zett.tokenization.byte_level import ModelKind, TokenizerError

ROLES = ("bos", "eos", "pad", "unk")

# Content -> role for tokenizers whose files do not name their roles (tokenizer.json alone).
_ROLE_GUESSES = {
  "bos": ("<s>", "<|begin_of_text|>", "[CLS]", "<bos>", "<|startoftext|>"),
  "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]", "<eos>", "<|im_end|>"),
  "pad": ("<pad>", "[PAD]", "<|pad|>", "<|endoftext|>"),
  "unk": ("<unk>", "[UNK]", "<|unk|>"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """A tokenizer with its special tokens, their roles and a byte-level view of its vocabulary.

  `encode` never adds special tokens unless asked: training and the byte view work on raw text.
  """

  backend: tokenizers.Tokenizer
  """The `tokenizers` object that does the work (the original pipeline, unchanged)."""
  name: str
  """Where it came from (path or hub name), for messages and manifests."""
  kind: ModelKind
  special_ids: frozenset[int]
  """Ids of special tokens (control tokens: never spelled by text, keep their base embedding)."""
  roles: Mapping[str, int]
  """Role -> id for the roles this tokenizer has, out of bos/eos/pad/unk."""
  add_bos: bool = False
  """Whether the original adds BOS when asked for special tokens (used by `to_hf`)."""

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  @property
  def special_tokens(self) -> dict[str, int]:
    """Special token content -> id."""
    out = {}
    for i in sorted(self.special_ids):
      piece = self.id_to_piece[i]
      assert piece is not None  # special ids are ids of vocabulary tokens
      out[piece] = i
    return out

  @functools.cached_property
  def id_to_piece(self) -> tuple[str | None, ...]:
    """The vocabulary as the model spells it (None for ids that hold no token)."""
    pieces: list[str | None] = [None] * self.vocab_size
    for piece, token_id in self.backend.get_vocab(with_added_tokens=True).items():
      if token_id >= len(pieces):
        pieces.extend([None] * (token_id + 1 - len(pieces)))
      pieces[token_id] = piece
    return tuple(pieces)

  @functools.cached_property
  def _continuing_prefix(self) -> str:
    model = json.loads(self.backend.model.__getstate__()) if self.kind == ModelKind.WORDPIECE else {}
    return model.get("continuing_subword_prefix") or "##"

  @functools.cached_property
  def vocab_bytes(self) -> tuple[bytes, ...]:
    """Bytes of every token id (special tokens: their UTF-8 content; check `is_special`)."""
    return tuple(
      byte_level.vocabulary_bytes(self.id_to_piece, self.kind, set(self.special_ids), self._continuing_prefix)
    )

  @functools.cached_property
  def is_special(self) -> np.ndarray:
    """bool [vocab_size]: True where the id is a special token."""
    mask = np.zeros(self.vocab_size, dtype=bool)
    mask[sorted(self.special_ids)] = True
    return mask

  def token_bytes(self, token_id: int) -> bytes:
    return self.vocab_bytes[token_id]

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    return [e.ids for e in self.backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

  def decode_bytes(self, ids: Sequence[int]) -> bytes:
    """Concatenated canonical bytes of `ids` (special tokens included as their content)."""
    table = self.vocab_bytes
    return b"".join(table[i] for i in ids)

  def to_hf(self, out_dir: str | os.PathLike) -> Path:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json that
    `transformers.AutoTokenizer.from_pretrained(out_dir)` loads to tokenize identically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    self.backend.save(str(out / "tokenizer.json"))
    pieces = self.id_to_piece
    special_map = {f"{role}_token": pieces[token_id] for role, token_id in self.roles.items()}
    config = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "add_bos_token": self.add_bos,
      "add_eos_token": False,
      "clean_up_tokenization_spaces": False,
      "model_max_length": 1 << 30,
      **special_map,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))
    return out

  def to_transformers(self) -> Any:
    """The equivalent `transformers` fast tokenizer (loaded from `to_hf`'s files): what a Hugging Face export saves."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="zett-tokenizer-") as folder:
      self.to_hf(folder)
      hf = AutoTokenizer.from_pretrained(folder)
    hf.name_or_path = self.name
    return hf

  def __repr__(self) -> str:
    return f"Tokenizer({self.name!r}, kind={self.kind.value}, vocab_size={self.vocab_size}, roles={dict(self.roles)})"


def from_backend(
  backend: tokenizers.Tokenizer,
  name: str,
  roles: Mapping[str, int | str | None] | None = None,
  extra_special: Sequence[int] = (),
  add_bos: bool = False,
) -> Tokenizer:
  """Wrap a `tokenizers.Tokenizer`, finding its special tokens and (if not given) their roles.

  Truncation and padding a tokenizer.json may carry (sentence-embedding models ship files that cut and pad every
  encoding to 128 tokens) are switched off on a copy: they would silently drop text from evaluation and training.
  """
  if backend.truncation is not None or backend.padding is not None:
    backend = tokenizers.Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
  # Only the small components are serialised: the whole tokenizer.json of a 150k vocabulary takes seconds.
  components: dict[str, Any] = {"model": {"type": type(backend.model).__name__}}
  for part in ("pre_tokenizer", "decoder"):
    value = getattr(backend, part)
    components[part] = json.loads(value.__getstate__()) if value is not None else None
  kind = byte_level.detect_kind(components)
  vocab = backend.get_vocab(with_added_tokens=True)
  check_dense_ids(vocab, name)
  special_ids = {token_id for token_id, token in backend.get_added_tokens_decoder().items() if token.special}
  special_ids.update(extra_special)
  resolved: dict[str, int] = {}
  for role, value in (roles or {}).items():
    if value is None:
      continue
    token_id = vocab.get(value) if isinstance(value, str) else int(value)
    if token_id is None or not 0 <= token_id < backend.get_vocab_size(with_added_tokens=True):
      raise TokenizerError(f"{name}: {role} token {value!r} is not in the vocabulary")
    resolved[role] = token_id
  for role, guesses in _ROLE_GUESSES.items():
    if role not in resolved:
      for content in guesses:
        if vocab.get(content, -1) in special_ids:  # never a plain token that reads "<s>"
          resolved[role] = vocab[content]
          break
  special_ids.update(resolved.values())
  return Tokenizer(
    backend=backend, name=name, kind=kind, special_ids=frozenset(special_ids), roles=resolved, add_bos=add_bos
  )


def from_transformers(hf: Any, name: str | None = None) -> Tokenizer:
  """A `transformers` fast tokenizer as a `Tokenizer`: its `tokenizers` backend, the special tokens it names for
  bos/eos/pad/unk (roles it leaves unset are guessed as in `from_backend`) and its `add_bos_token`.

  `name` defaults to the tokenizer's `name_or_path`. The one place a `transformers` tokenizer becomes a zett one.
  """
  backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
  name = name or str(getattr(hf, "name_or_path", "") or type(hf).__name__)
  if not isinstance(backend, tokenizers.Tokenizer):
    raise TokenizerError(f"{name}: the transformers tokenizer has no fast (tokenizers) backend")
  roles = {role: getattr(hf, f"{role}_token", None) for role in ROLES}
  return from_backend(backend, name, roles, add_bos=bool(getattr(hf, "add_bos_token", False)))


def check_dense_ids(vocab: Mapping[str, int], name: str) -> None:
  """Refuses a vocabulary whose ids are not exactly 0..len(vocab)-1.

  Every table zett builds for a tokenizer (pieces, bytes, embedding rows) is sized by the largest id: a
  16 KB tokenizer.json mapping one token to id 10^9 would otherwise allocate gigabytes before anything fails.
  """
  if not vocab:
    raise TokenizerError(f"{name}: the vocabulary is empty")
  piece, largest = max(vocab.items(), key=lambda item: item[1])
  if largest >= len(vocab) or len(set(vocab.values())) != len(vocab):
    raise TokenizerError(
      f"{name}: token ids must run from 0 to {len(vocab) - 1} without gaps or repeats "
      f"({len(vocab)} tokens), but {piece!r} has id {largest}"
    )
