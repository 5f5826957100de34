"""Carry a tokenizer transfer made on a base model over to a fine-tuned variant of that base.

The ZeTT paper transfers chat models (e.g. Mistral-7B-Instruct) with the hypernetwork of their base
model. What we do, exactly:

  new_embeddings(target) = transferred_embeddings(target) + M(E_finetuned - E_base)

for input embeddings, output embeddings (untied bases) and the output bias alike, where M is the linear
map the transfer method applies to base embeddings:
- `fvt`, `lexical`, `mean`: M is that method itself, so the result equals running the method on the
  fine-tuned model's embeddings (these methods are linear in the embeddings);
- `hypernet`: M is the mean over each token's base-subtoken spelling, i.e. the delta goes through the
  hypernetwork's residual heuristic while its learned correction (computed on the base) is kept; the
  correction's dependence on the delta is neglected, which is the first-order approximation and is
  exact for tokens identical to a base token;
- `focus`, `random`: M is the FVT map as well (their own weights or samples are not linear maps of E).
In every case special tokens and tokens identical to a base token receive their exact fine-tuned delta.
All non-embedding weights (the transformer body) come from the fine-tuned model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from zett.baselines import make_baseline
from zett.hypernet.vocabulary import embed_in_chunks
from zett.models.base import BaseModel
from zett.models.family import Embeddings
from zett.transfer import TRANSFER_RECORD_NAME, TransferError, TransferRecord, target_vocabulary, with_new_vocabulary

_LINEAR_METHODS = ("fvt", "lexical", "mean")


class ApplyError(TransferError):
  """Base, transferred and fine-tuned models that do not belong together."""


def read_transfer_record(folder: str | Path) -> dict:
  """The `zett_transfer.json` of an exported transfer folder."""
  path = Path(folder) / TRANSFER_RECORD_NAME
  if not path.is_file():
    raise ApplyError(f"{path}: missing; the transferred model must be a folder written by `zett transfer`")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ApplyError(f"{path}: not valid JSON ({e})") from None


def _check_compatible(base: BaseModel, transferred: BaseModel, finetuned: BaseModel, record: dict) -> None:
  if record.get("base_weights_sha256") and record["base_weights_sha256"] != base.weights_sha256:
    raise ApplyError(
      f"{transferred.name}: was transferred from base weights {record['base_weights_sha256'][:12]}…, but the base "
      f"given ({base.name}) has {base.weights_sha256[:12]}…"
    )
  if finetuned.family.name != base.family.name:
    raise ApplyError(f"{finetuned.name}: family {finetuned.family.name} differs from the base's ({base.family.name})")
  for name, b, f in zip(Embeddings._fields, base.embeddings, finetuned.embeddings):
    b_shape = None if b is None else tuple(b.shape)
    f_shape = None if f is None else tuple(f.shape)
    if b_shape != f_shape:
      raise ApplyError(
        f"{finetuned.name}: {name} embeddings have shape {f_shape}, the base has {b_shape} "
        "(the fine-tuned model must share the base's vocabulary)"
      )


def _plus_delta(transferred_rows, mapped_delta):
  if transferred_rows is None:
    return None
  assert mapped_delta is not None  # the transfer kept the base's layout (tied or not, bias or not)
  return np.asarray(transferred_rows, np.float32) + mapped_delta


def apply_transfer(
  base: BaseModel,
  transferred: BaseModel,
  finetuned: BaseModel,
  record: dict,
  tokenizer=None,
  batch_size: int = 4096,
  progress: bool = True,
) -> tuple[BaseModel, TransferRecord]:
  """The fine-tuned model with the transferred vocabulary (see the module docstring for the rule).

  Args:
    base: the base model the transfer was made on (its tokenizer spells the target tokens).
    transferred: the transferred base model (its tokenizer is the target tokenizer).
    finetuned: a fine-tuned variant of `base` with the same vocabulary.
    record: the transfer's record (`read_transfer_record`): method and base sha256.
    tokenizer: the target tokenizer spec; default `transferred.tokenizer`.
  """
  _check_compatible(base, transferred, finetuned, record)
  method = record.get("method", "fvt")
  delta = Embeddings(
    *(
      None if b is None else jnp.asarray(f, jnp.float32) - jnp.asarray(b, jnp.float32)
      for b, f in zip(base.embeddings, finetuned.embeddings)
    )
  )
  target = target_vocabulary(tokenizer if tokenizer is not None else transferred.tokenizer, base)
  if target.size != transferred.embeddings.input.shape[0]:
    raise ApplyError(
      f"{transferred.name}: has {transferred.embeddings.input.shape[0]} embeddings but its tokenizer "
      f"has {target.size} tokens"
    )
  map_method = method if method in _LINEAR_METHODS else "fvt"
  surfaces = (target.surface_ids, target.surface_lengths, target.special_base_ids)
  mapped = embed_in_chunks(
    make_baseline(map_method, delta, *surfaces),
    *surfaces,
    chunk_size=min(batch_size, target.size),
    progress=progress,
    description=f"delta ({map_method}) → {target.name}",
  )
  new = Embeddings(*(_plus_delta(t, m) for t, m in zip(transferred.embeddings, mapped)))
  model = with_new_vocabulary(finetuned, new, transferred.tokenizer, f"{finetuned.name}@{target.name}")
  out_record = TransferRecord(
    base=finetuned.name,
    base_weights_sha256=finetuned.weights_sha256,
    tokenizer=record.get("tokenizer", target.name),
    method=f"{method} (applied from base {base.name}; delta mapped with {map_method})",
    target_vocab_size=target.size,
    num_copied_special_tokens=int((target.special_base_ids >= 0).sum()),
    num_identical_tokens=int(((target.surface_lengths == 1) & (target.special_base_ids < 0)).sum()),
    hypernet=record.get("hypernet"),
    hypernet_sha256=record.get("hypernet_sha256"),
  )
  return model, out_record
