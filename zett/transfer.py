"""Tokenizer transfer: new embeddings for every token of a target tokenizer, for a frozen base model.

Data flow: target tokenizer -> each token spelled in base subtokens (`zett.tokenization.surface_forms`)
-> embeddings from the hypernetwork or a baseline (`zett.baselines`), batch by batch into preallocated
host arrays -> the base model with its vocabulary-sized parameters replaced -> (optionally) a Hugging Face
folder written atomically by `export`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from zett.baselines import BASELINE_METHODS, make_baseline
from zett.errors import ZettError
from zett.models.base import BaseModel
from zett.models.family import Embeddings
from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH
from zett.tokenization.tokenizer import Tokenizer
from zett.transfer_vocab import MissingTokenizerError, TargetVocabulary, as_tokenizer, build_target_vocabulary

METHODS = ("hypernet",) + BASELINE_METHODS
_MAX_BATCH_SIZE = 8192
_SPECIAL_ID_FIELDS = (
  "bos_token_id",
  "eos_token_id",
  "pad_token_id",
  "sep_token_id",
  "cls_token_id",
  "mask_token_id",
  "unk_token_id",
)
TRANSFER_RECORD_NAME = "zett_transfer.json"


class TransferError(ZettError, ValueError):
  """A transfer that cannot run as asked; the message names the input at fault."""


class VocabularyTooLargeError(TransferError):
  """The target vocabulary's embeddings (plus working memory) do not fit in the memory available."""


class OutputExistsError(TransferError):
  """The output folder exists and overwriting was not asked for."""


@dataclasses.dataclass(frozen=True)
class TransferRecord:
  """What a transfer did, as written to the model card and `zett_transfer.json`."""

  base: str
  base_weights_sha256: str
  tokenizer: str
  method: str
  target_vocab_size: int
  num_copied_special_tokens: int
  """Target special tokens that copy a base special token's embeddings (matched by role or content)."""
  num_identical_tokens: int
  """Target tokens whose bytes equal one base token (spelled by a single base subtoken)."""
  hypernet: str | None = None
  hypernet_sha256: str | None = None
  """sha256 of the hypernetwork's weights file (as verified by `hypernet.load_hypernetwork`)."""
  seconds: float = 0.0
  evaluation: Any = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def available_memory_bytes() -> int:
  """MemAvailable from /proc/meminfo (Linux), else physical memory."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _per_token_work_bytes(embedding_dim: int, surface_length: int, hypernet_config=None) -> int:
  """Peak float32 working memory per target token inside one batch (activations, not weights)."""
  gathered = surface_length * embedding_dim * 2 * 4  # in+out subtoken rows
  if hypernet_config is None:
    return gathered + embedding_dim * 4 * 4
  h, heads = hypernet_config.body_hidden_size, hypernet_config.body_num_heads
  # qkv (3h) + attention out + residuals/norms (~4h) + MLP (2 * mlp) per position, plus the score matrices.
  per_position = (3 * h + 5 * h + 2 * hypernet_config.body_mlp_size) * 4
  return gathered + surface_length * per_position + heads * surface_length**2 * 4 * 2


def estimate_transfer_bytes(
  base: BaseModel, target_vocab_size: int, batch_size: int, surface_length: int, hypernet_config=None
) -> int:
  """Bytes a transfer needs beyond what is already loaded: result matrices (x2 for the export copy),
  surface forms, and one batch's working memory."""
  embeddings = base.embeddings
  d = int(embeddings.input.shape[1])
  num_matrices = 1 + (embeddings.output is not None)
  result = target_vocab_size * (d * num_matrices + (embeddings.bias is not None)) * 4
  surfaces = target_vocab_size * (surface_length + 2) * 4
  work = batch_size * _per_token_work_bytes(d, surface_length, hypernet_config)
  return 2 * result + surfaces + work


def _choose_batch_size(
  base: BaseModel, vocab_size: int, surface_length: int, hypernet_config, memory_bytes: int, batch_size: int | None
) -> int:
  """`batch_size` if given, else the largest power of two whose working set takes <= 1/4 of the memory
  left after the results (capped at 8192, which already keeps the CPU busy)."""
  if batch_size is not None:
    if batch_size < 1:
      raise TransferError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size
  fixed = estimate_transfer_bytes(base, vocab_size, 0, surface_length, hypernet_config)
  per_token = _per_token_work_bytes(int(base.embeddings.input.shape[1]), surface_length, hypernet_config)
  budget = max(memory_bytes - fixed, 0) // 4
  size = 64
  while size * 2 <= min(_MAX_BATCH_SIZE, budget // per_token):
    size *= 2
  return min(size, max(vocab_size, 1))


def _check_memory(
  base: BaseModel,
  target: str,
  vocab_size: int,
  batch_size: int,
  surface_length: int,
  hypernet_config,
  memory_bytes: int,
) -> None:
  needed = estimate_transfer_bytes(base, vocab_size, batch_size, surface_length, hypernet_config)
  if needed > memory_bytes:
    raise VocabularyTooLargeError(
      f"{target}: a {vocab_size:,}-token vocabulary for {base.name} needs about {needed / 2**30:.2f} GiB "
      f"(embeddings, export copy, batch of {batch_size}) but only {memory_bytes / 2**30:.2f} GiB is available; "
      f"use a smaller vocabulary or a machine with more memory"
    )


def target_vocabulary(tokenizer, base: BaseModel, surface_length: int = DEFAULT_SURFACE_LENGTH) -> TargetVocabulary:
  """Loads the target tokenizer (a spec or an object) and spells its tokens in the base's subtokens."""
  if base.tokenizer is None:
    raise MissingTokenizerError(f"{base.name}: the base model has no tokenizer to spell target tokens with")
  return build_target_vocabulary(tokenizer, base.tokenizer, surface_length)


def _with_special_ids(config, tokenizer: Tokenizer | None):
  """The family config with the target tokenizer's special-token ids (its roles), for the fields the config has.

  RoBERTa-style configs keep their pad id: position ids start at pad_token_id + 1, so it is part of the
  pretrained position layout rather than a vocabulary choice. A target without a pad token keeps the base's
  pad id (it only marks padding)."""
  names = {f.name for f in dataclasses.fields(config)}
  updates = {}
  for field in _SPECIAL_ID_FIELDS:
    if field not in names:
      continue
    if field == "pad_token_id" and getattr(config, "is_roberta", False):
      continue
    value = tokenizer.roles.get(field.removesuffix("_token_id")) if tokenizer is not None else None
    if value is None and field == "pad_token_id":
      continue
    updates[field] = value
  return dataclasses.replace(config, **updates)


def with_new_vocabulary(model: BaseModel, embeddings: Embeddings, tokenizer: Tokenizer | None, name: str) -> BaseModel:
  """`model` with its vocabulary-sized parameters replaced by `embeddings` and `tokenizer`'s special ids."""
  config, params = model.family.set_embeddings(model.config, model.params, embeddings)
  config = _with_special_ids(config, tokenizer)
  return BaseModel.from_params(
    model.family, config, params, name, tokenizer, getattr(model.module, "dtype", jnp.float32)
  )


def transfer_with_record(
  base: BaseModel,
  tokenizer,
  hypernet=None,
  method: str = "hypernet",
  batch_size: int | None = None,
  max_memory_bytes: int | None = None,
  seed: int = 0,
  progress: bool = True,
) -> tuple[BaseModel, TransferRecord]:
  """`transfer`, plus the record of what was done (for the model card)."""
  if method not in METHODS:
    raise TransferError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
  if method == "hypernet" and hypernet is None:
    raise TransferError("method 'hypernet' needs a hypernetwork checkpoint (--hypernet)")
  started = time.perf_counter()
  hypernetwork = None
  if method == "hypernet":
    from zett.hypernet.record import load_hypernetwork

    hypernetwork = load_hypernetwork(hypernet, base)
  hypernet_config = hypernetwork.config if hypernetwork else None
  surface_length = hypernet_config.surface_length if hypernet_config else DEFAULT_SURFACE_LENGTH
  memory = available_memory_bytes() if max_memory_bytes is None else int(max_memory_bytes)

  if base.tokenizer is None:
    raise MissingTokenizerError(f"{base.name}: the base model has no tokenizer to spell target tokens with")
  target_tokenizer = as_tokenizer(tokenizer, "target tokenizer")
  vocab_size = target_tokenizer.vocab_size
  size = _choose_batch_size(base, vocab_size, surface_length, hypernet_config, memory, batch_size)
  _check_memory(base, target_tokenizer.name, vocab_size, size, surface_length, hypernet_config, memory)
  if getattr(hypernet_config, "surface_tokenizer", ""):  # a published hypernetwork spells with its own tokenizer
    from zett.transfer_vocab import published_target_vocabulary

    target = published_target_vocabulary(target_tokenizer, hypernet_config)
  else:
    target = target_vocabulary(target_tokenizer, base, surface_length)

  from zett.hypernet.vocabulary import embed_in_chunks, embed_vocabulary

  base_embeddings = Embeddings(*(None if m is None else jnp.asarray(m, jnp.float32) for m in base.embeddings))
  surfaces = (target.surface_ids, target.surface_lengths, target.special_base_ids)
  chunking: dict[str, Any] = dict(chunk_size=size, progress=progress, description=f"{method} → {target.name}")
  if method == "hypernet":
    assert hypernetwork is not None  # loaded above for this method
    vocab_size = int(target.surface_lengths.shape[0])
    new = embed_vocabulary(hypernetwork, base_embeddings, *surfaces, vocab_size=vocab_size, **chunking)
  else:
    embed = make_baseline(method, base_embeddings, *surfaces, seed=seed)
    new = embed_in_chunks(embed, *surfaces, **chunking)

  model = with_new_vocabulary(base, new, target.tokenizer, f"{base.name}@{target.name}")
  special = target.special_base_ids >= 0
  source, sha = (hypernetwork.source, hypernetwork.sha256) if hypernetwork else (None, None)
  record = TransferRecord(
    base=base.name,
    base_weights_sha256=base.weights_sha256,
    tokenizer=target.name,
    method=method,
    target_vocab_size=target.size,
    num_copied_special_tokens=int(special.sum()),
    num_identical_tokens=int(((target.surface_lengths == 1) & ~special).sum()),
    hypernet=source,
    hypernet_sha256=sha,
    seconds=round(time.perf_counter() - started, 3),
  )
  return model, record


def transfer(
  base: BaseModel,
  tokenizer,
  hypernet=None,
  method: str = "hypernet",
  batch_size: int | None = None,
  max_memory_bytes: int | None = None,
  seed: int = 0,
  progress: bool = True,
) -> BaseModel:
  """Transfers `base` to `tokenizer`: new input (and output, and bias) embeddings for every target token.

  Args:
    base: the frozen base model (its tokenizer spells the target tokens).
    tokenizer: the target tokenizer: a spec for `zett.tokenization.load_tokenizer` or a loaded tokenizer.
    hypernet: anything `hypernet.load_hypernetwork` takes (a folder, shipped or published name, a `Hypernetwork` or a
      (config, params) pair); it must fit the base (`hypernet.check_fits_base`).
    method: "hypernet" or a baseline from `zett.baselines` ("fvt", "mean", "lexical", "random", "focus").
    batch_size: target tokens per batch; default: sized to the available memory.
    max_memory_bytes: memory budget; default: what the OS reports as available. Exceeding it raises
      `VocabularyTooLargeError` before anything is computed.
    seed: for the "random" baseline.
    progress: show a tqdm progress bar.

  Returns:
    A `BaseModel` with the target vocabulary; special tokens carry the base's own embeddings.
  """
  return transfer_with_record(base, tokenizer, hypernet, method, batch_size, max_memory_bytes, seed, progress)[0]


def check_output_folder(out_dir: str | Path, overwrite: bool) -> Path:
  """Refuses an existing output folder unless `overwrite` (call before the expensive work)."""
  out = Path(out_dir)
  if out.exists() and not overwrite:
    raise OutputExistsError(f"{out}: output folder exists (pass --overwrite / overwrite=True to replace it)")
  if out.exists() and not out.is_dir():
    raise OutputExistsError(f"{out}: exists and is not a folder")
  # The nearest existing folder above must be a writable folder: found now, not after minutes of work.
  above = out.absolute().parent
  while not above.exists():
    above = above.parent
  if not above.is_dir():
    raise TransferError(f"{out}: cannot be created, {above} is a file")
  if not os.access(above, os.W_OK | os.X_OK):
    raise TransferError(f"{out}: cannot be created, {above} is not writable")
  return out


def model_card(model: BaseModel, record: TransferRecord) -> str:
  """README.md for an exported transfer: provenance, method and (if run) evaluation."""
  auto_class = "AutoModelForCausalLM" if model.family.is_causal else "AutoModelForMaskedLM"
  lines = [
    "---",
    "library_name: transformers",
    "tags:",
    "- zett",
    "- tokenizer-transfer",
    "---",
    "",
    f"# {model.name}",
    "",
    f"`{record.base}` transferred to the tokenizer `{record.tokenizer}` with zett (zero-shot tokenizer transfer).",
    "",
    "| | |",
    "|---|---|",
    f"| base model | `{record.base}` |",
    f"| base weights sha256 | `{record.base_weights_sha256}` |",
    f"| target tokenizer | `{record.tokenizer}` ({record.target_vocab_size:,} tokens, "
    f"{record.num_copied_special_tokens} special tokens copied from the base, "
    f"{record.num_identical_tokens:,} identical to base tokens) |",
    f"| method | `{record.method}` |",
  ]
  if record.hypernet is not None or record.hypernet_sha256 is not None:
    lines.append(f"| hypernetwork | `{record.hypernet}` |")
    lines.append(f"| hypernetwork weights sha256 | `{record.hypernet_sha256}` |")
  lines += [
    f"| transfer time | {record.seconds:.1f} s |",
    "",
    f"Special tokens keep the base model's embeddings. Provenance in machine-readable form: `{TRANSFER_RECORD_NAME}`.",
    "",
  ]
  if record.evaluation:
    from zett.eval_report import format_table

    lines += ["## Evaluation", "", "```", format_table(record.evaluation), "```", ""]
  lines += [
    "## Use",
    "",
    "```python",
    f"from transformers import {auto_class}, AutoTokenizer",
    f'model = {auto_class}.from_pretrained("path/to/this/folder")',
    'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
    "```",
    "",
  ]
  return "\n".join(lines)


def export(model: BaseModel, record: TransferRecord, out_dir: str | Path, overwrite: bool = False) -> Path:
  """Writes a transferred model as a Hugging Face folder (weights, config, tokenizer, model card, record).

  Everything is written to a hidden staging folder next to `out_dir` and renamed into place at the end,
  so a failure never leaves a half-written `out_dir`.
  """
  from zett.interop.hf import save_pretrained
  from zett.staging import new_staging_folder, replace_folder

  out = check_output_folder(out_dir, overwrite)
  staging = new_staging_folder(out)
  try:
    folder = save_pretrained(model, staging / "model", name=model.name)
    (folder / "README.md").write_text(model_card(model, record))
    (folder / TRANSFER_RECORD_NAME).write_text(json.dumps(record.to_json(), indent=2, default=str) + "\n")
    replace_folder(folder, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out
