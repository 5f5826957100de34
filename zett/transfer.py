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

import jax
import jax.numpy as jnp
import numpy as np

from zett.baselines import BASELINE_METHODS, make_baseline
from zett.errors import ZettError
from zett.models.base import BaseModel, params_sha256
from zett.models.family import Embeddings
from zett.tokenization.surface import DEFAULT_SURFACE_LENGTH
from zett.transfer_vocab import MissingTokenizerError, TargetVocabulary, as_tokenizer, build_target_vocabulary

METHODS = ("hypernet",) + BASELINE_METHODS
_MAX_BATCH_SIZE = 8192
_SPECIAL_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "cls_token_id",
                      "mask_token_id", "unk_token_id")
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
  """sha256 of the hypernetwork's weights file (as recorded and verified by `hypernet.io`)."""
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
  return gathered + surface_length * per_position + heads * surface_length ** 2 * 4 * 2


def estimate_transfer_bytes(base: BaseModel, target_vocab_size: int, batch_size: int, surface_length: int,
                            hypernet_config=None) -> int:
  """Bytes a transfer needs beyond what is already loaded: result matrices (x2 for the export copy),
  surface forms, and one batch's working memory."""
  embeddings = base.embeddings
  d = int(embeddings.input.shape[1])
  num_matrices = 1 + (embeddings.output is not None)
  result = target_vocab_size * (d * num_matrices + (embeddings.bias is not None)) * 4
  surfaces = target_vocab_size * (surface_length + 2) * 4
  work = batch_size * _per_token_work_bytes(d, surface_length, hypernet_config)
  return 2 * result + surfaces + work


def _choose_batch_size(base: BaseModel, vocab_size: int, surface_length: int, hypernet_config,
                       memory_bytes: int, batch_size: int | None) -> int:
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


def _check_memory(base: BaseModel, target: str, vocab_size: int, batch_size: int, surface_length: int,
                  hypernet_config, memory_bytes: int) -> None:
  needed = estimate_transfer_bytes(base, vocab_size, batch_size, surface_length, hypernet_config)
  if needed > memory_bytes:
    raise VocabularyTooLargeError(
        f"{target}: a {vocab_size:,}-token vocabulary for {base.name} needs about {needed / 2**30:.2f} GiB "
        f"(embeddings, export copy, batch of {batch_size}) but only {memory_bytes / 2**30:.2f} GiB is available; "
        f"use a smaller vocabulary or a machine with more memory")


def _resolve_hypernet(base: BaseModel, hypernet):
  """(config, params, path or None, weights sha256 or None) from a folder path or a (config, params) pair."""
  from hypernet.io import hypernet_weights_sha256, load_hypernet
  from hypernet.published_config import PublishedHypernetConfig
  from hypernet.published_io import check_against_base
  if isinstance(hypernet, (str, Path)):
    config, params = load_hypernet(hypernet, base_weights_sha256=base.weights_sha256)
    path, sha = str(hypernet), hypernet_weights_sha256(hypernet, config)
  else:
    config, params = hypernet
    path, sha = None, None
    if config.base_weights_sha256 and config.base_weights_sha256 != base.weights_sha256:
      raise TransferError(
          f"hypernetwork was trained for base weights {config.base_weights_sha256[:12]}…, but {base.name} has "
          f"{base.weights_sha256[:12]}…")
  embeddings = base.embeddings
  if isinstance(config, PublishedHypernetConfig):  # names the config.json field that does not fit
    check_against_base(config, embeddings, base.name)
  where = path or "hypernetwork"
  if (config.embedding_dim, config.base_vocab_size) != tuple(embeddings.input.shape[::-1]):
    raise TransferError(
        f"{where}: built for embeddings [{config.base_vocab_size}, {config.embedding_dim}], but {base.name} has "
        f"{list(embeddings.input.shape)}")
  if config.predict_output_embeddings != (embeddings.output is not None):
    raise TransferError(f"{where}: output-embedding head does not match {base.name}'s tie setting")
  if config.predict_output_bias != (embeddings.bias is not None):
    raise TransferError(f"{where}: output-bias head does not match {base.name}")
  return config, params, path, sha


def _hypernet_embedder(config, params, base_embeddings: Embeddings):
  from hypernet.model import predict_jit
  params = jax.tree_util.tree_map(jnp.asarray, params)

  def embed(ids, lengths, special, rows):
    return predict_jit(config, params, jnp.asarray(ids), jnp.asarray(lengths), base_embeddings,
                       jnp.asarray(special))
  return embed


def target_vocabulary(tokenizer, base: BaseModel, surface_length: int = DEFAULT_SURFACE_LENGTH) -> TargetVocabulary:
  """Loads the target tokenizer (a spec or an object) and spells its tokens in the base's subtokens."""
  if base.tokenizer is None:
    raise MissingTokenizerError(f"{base.name}: the base model has no tokenizer to spell target tokens with")
  return build_target_vocabulary(tokenizer, base.tokenizer, surface_length)


def _with_special_ids(config, tokenizer):
  """The family config with the target tokenizer's special-token ids, for the fields the config has.

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
    value = getattr(tokenizer, field, None) if tokenizer is not None else None
    if value is None and field == "pad_token_id":
      continue
    updates[field] = value
  return dataclasses.replace(config, **updates)


def with_new_vocabulary(model: BaseModel, embeddings: Embeddings, tokenizer, name: str) -> BaseModel:
  """`model` with its vocabulary-sized parameters replaced by `embeddings` and `tokenizer`'s special ids."""
  config, params = model.family.set_embeddings(model.config, model.params, embeddings)
  config = _with_special_ids(config, tokenizer)
  dtype = getattr(model.module, "dtype", jnp.float32)
  return BaseModel(family=model.family, config=config, module=model.family.make_module(config, dtype),
                   params=params, tokenizer=tokenizer, name=name, weights_sha256=params_sha256(params))


def transfer_with_record(base: BaseModel, tokenizer, hypernet=None, method: str = "hypernet",
                         batch_size: int | None = None, max_memory_bytes: int | None = None, seed: int = 0,
                         progress: bool = True) -> tuple[BaseModel, TransferRecord]:
  """`transfer`, plus the record of what was done (for the model card)."""
  if method not in METHODS:
    raise TransferError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
  if method == "hypernet" and hypernet is None:
    raise TransferError("method 'hypernet' needs a hypernetwork checkpoint (--hypernet)")
  started = time.perf_counter()
  hypernet_config = params = hypernet_path = hypernet_sha = None
  if method == "hypernet":
    hypernet_config, params, hypernet_path, hypernet_sha = _resolve_hypernet(base, hypernet)
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

  base_embeddings = Embeddings(*(None if m is None else jnp.asarray(m, jnp.float32) for m in base.embeddings))
  if method == "hypernet":
    embed = _hypernet_embedder(hypernet_config, params, base_embeddings)
  else:
    embed = make_baseline(method, base_embeddings, target.surface_ids, target.surface_lengths,
                          target.special_base_ids, seed=seed)
  new = _embed_vocabulary(embed, target, base_embeddings, size, progress, f"{method} → {target.name}")

  model = with_new_vocabulary(base, new, target.hf_tokenizer, f"{base.name}@{target.name}")
  special = target.special_base_ids >= 0
  record = TransferRecord(
      base=base.name, base_weights_sha256=base.weights_sha256, tokenizer=target.name, method=method,
      target_vocab_size=target.size, num_copied_special_tokens=int(special.sum()),
      num_identical_tokens=int(((target.surface_lengths == 1) & ~special).sum()),
      hypernet=hypernet_path, hypernet_sha256=hypernet_sha, seconds=round(time.perf_counter() - started, 3))
  return model, record


def transfer(base: BaseModel, tokenizer, hypernet=None, method: str = "hypernet", batch_size: int | None = None,
             max_memory_bytes: int | None = None, seed: int = 0, progress: bool = True) -> BaseModel:
  """Transfers `base` to `tokenizer`: new input (and output, and bias) embeddings for every target token.

  Args:
    base: the frozen base model (its tokenizer spells the target tokens).
    tokenizer: the target tokenizer: a spec for `zett.tokenization.load_tokenizer` or a loaded tokenizer.
    hypernet: a hypernetwork folder (checked against the base's weights sha256) or a (config, params) pair.
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


def _embed_vocabulary(embed, target: TargetVocabulary, base: Embeddings, batch_size: int, progress: bool,
                      description: str) -> Embeddings:
  """Runs `embed` over the vocabulary in fixed-shape batches of rows sorted by surface length.

  Each batch is cut to its longest spelling (padding never changes a prediction), so a vocabulary whose tokens are
  mostly 1-3 subtokens long costs a fraction of a padded pass; the last batch of each length is padded, so there is at
  most one compilation per surface length.
  """
  from tqdm.auto import tqdm
  v, d = target.size, int(base.input.shape[1])
  out_in = np.empty((v, d), np.float32)
  out_out = np.empty((v, d), np.float32) if base.output is not None else None
  out_bias = np.empty((v,), np.float32) if base.bias is not None else None
  order = np.argsort(target.surface_lengths, kind="stable")
  with tqdm(total=v, desc=description, unit="tok", disable=not progress) as bar:
    start = 0
    while start < v:
      length = max(1, int(target.surface_lengths[order[min(v, start + batch_size) - 1]]))
      # Stop the batch where longer spellings begin, so it is cut to `length` without truncating any row.
      stop = min(v, start + batch_size, int(np.searchsorted(target.surface_lengths[order], length, side="right")))
      chosen, n = order[start:stop], stop - start
      ids = np.zeros((batch_size, length), np.int32)
      lengths = np.zeros((batch_size,), np.int32)
      special = np.full((batch_size,), -1, np.int32)
      ids[:n], lengths[:n] = target.surface_ids[chosen, :length], target.surface_lengths[chosen]
      special[:n] = target.special_base_ids[chosen]
      rows = np.concatenate([chosen, np.arange(v, v + batch_size - n)]).astype(np.int32)
      result = embed(ids, lengths, special, rows)
      out_in[chosen] = np.asarray(result.input)[:n]
      if out_out is not None:
        out_out[chosen] = np.asarray(result.output)[:n]
      if out_bias is not None:
        out_bias[chosen] = np.asarray(result.bias)[:n]
      bar.update(n)
      start = stop
  return Embeddings(out_in, out_out, out_bias)


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
      "---", "library_name: transformers", "tags:", "- zett", "- tokenizer-transfer", "---", "",
      f"# {model.name}", "",
      f"`{record.base}` transferred to the tokenizer `{record.tokenizer}` with zett (zero-shot tokenizer transfer).",
      "", "| | |", "|---|---|",
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
  lines += [f"| transfer time | {record.seconds:.1f} s |", "",
            "Special tokens keep the base model's embeddings. Provenance in machine-readable form: "
            f"`{TRANSFER_RECORD_NAME}`.", ""]
  if record.evaluation:
    from zett.eval_report import format_table
    lines += ["## Evaluation", "", "```", format_table(record.evaluation), "```", ""]
  lines += ["## Use", "", "```python", f"from transformers import {auto_class}, AutoTokenizer",
            f'model = {auto_class}.from_pretrained("path/to/this/folder")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", ""]
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
