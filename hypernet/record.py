"""A loaded hypernetwork as one record, the one loader that makes it, and the one check that it fits a base model.

Everything that runs a hypernetwork (transfer, the ANN vocabulary build, dynamic tokenization, the service) takes a
`Hypernetwork` from `load_hypernetwork`, which verifies the weights' sha256 wherever one is recorded and refuses a
hypernetwork built for another base before anything is computed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from zett.hypernet.config import HypernetConfig
from zett.hypernet.io import HypernetCheckpointError, read_hypernet_folder
from zett.hypernet.published_config import PublishedHypernetConfig


@dataclasses.dataclass(frozen=True, eq=False)
class Hypernetwork:
  """A hypernetwork ready to run: its shape, its weights, and where they came from."""

  config: HypernetConfig | PublishedHypernetConfig
  """zett's own config, or the config of a hypernetwork the ZeTT authors published (either runs `hypernet.predict`)."""
  params: Any
  sha256: str | None = None
  """sha256 of the weights file it was loaded from (verified against config.json, or a pin, where one exists); None
  for one built in memory."""
  source: str | None = None
  """What it was loaded from, as given (folder, shipped name, hub name); None for one built in memory."""

  @property
  def where(self) -> str:
    """How messages name it."""
    return self.source or "hypernetwork"


def load_hypernetwork(spec, base=None) -> Hypernetwork:
  """The hypernetwork `spec` names, checked against `base` when one is given.

  Args:
    spec: a folder written by `hypernet.io.save_hypernet` (its weights verified against its config.json, and against
      the pin in `zett.assets` for a shipped one); the name of a hypernetwork shipped with zett (`smollm2-135m`); a
      hypernetwork the ZeTT authors published (their folder or hub name, optionally `@LANG`; see
      `hypernet.published_io`); or one already loaded: a `Hypernetwork`, or a `(config, params)` pair built in memory.
    base: the base model it will run with (a `zett.models.base.BaseModel`); see `check_fits_base`.
  """
  if isinstance(spec, Hypernetwork):  # loaded already
    hypernetwork = spec
  else:
    hypernetwork = Hypernetwork(*spec) if isinstance(spec, tuple) else _read(spec)
    # On the device once, here: every `embed_vocabulary` call (one per service request) then uses them as they are
    # (a no-op for arrays already there, sharded ones included; published weights load as numpy).
    hypernetwork = dataclasses.replace(hypernetwork, params=jax.tree.map(jnp.asarray, hypernetwork.params))
  if base is not None:
    check_fits_base(hypernetwork, base)
  return hypernetwork


def _read(spec: str | Path) -> Hypernetwork:
  from zett import assets
  from zett.hypernet.published_io import is_published_spec, read_published_hypernet
  from zett.sha256 import file_sha256

  if is_published_spec(spec):  # the ZeTT authors' format (a folder or a hub name); it records no sha256 to verify
    config, params = read_published_hypernet(spec)
    return Hypernetwork(config, params, file_sha256(config.weights_file), str(spec))
  folder = Path(spec)
  if not folder.exists() and str(spec) in assets.SHIPPED_HYPERNETS:
    folder = assets.shipped_hypernet_path(str(spec))
  config, params, sha = read_hypernet_folder(folder, pinned_sha256=assets.pinned_hypernet_sha256(folder))
  return Hypernetwork(config, params, sha, str(spec))


# What each kind of config calls the fields a base must match, so that a message names the field to look up.
_FIELD_NAMES = {
  HypernetConfig: ("embedding_dim", "base_vocab_size", "predict_output_embeddings"),
  PublishedHypernetConfig: ("n_embd", "original_vocab_size", "separate_out_embeddings"),
}


def check_fits_base(hypernetwork: Hypernetwork, base) -> None:
  """Raises HypernetCheckpointError, naming what differs, unless `hypernetwork` was built for `base`.

  The base (a `zett.models.base.BaseModel`: `embeddings`, `name`, `weights_sha256`) must have the weights the
  hypernetwork was trained for (where its config records their sha256; published hypernetworks record none), and
  embeddings of its width and rows, tied or untied as it predicts, with an LM-head bias exactly when it predicts one.
  """
  config, where, name = hypernetwork.config, hypernetwork.where, base.name
  trained_for, given = config.base_weights_sha256, getattr(base, "weights_sha256", "")
  if trained_for and given and trained_for != given:
    raise HypernetCheckpointError(
      f"{where}: trained for base weights {trained_for[:12]}…, but {name} has {given[:12]}…"
    )
  width_field, rows_field, untied_field = _FIELD_NAMES[type(config)]
  embeddings = base.embeddings
  rows, width = (int(n) for n in embeddings.input.shape)
  if width != config.embedding_dim:
    raise HypernetCheckpointError(
      f"{where}: {width_field} is {config.embedding_dim}, but {name} has {width}-wide embeddings"
    )
  if rows != config.base_vocab_size:
    raise HypernetCheckpointError(
      f"{where}: {rows_field} is {config.base_vocab_size}, but {name} has {rows} embedding rows"
    )
  if config.predict_output_embeddings != (embeddings.output is not None):
    want, have = ("untied", "tied") if config.predict_output_embeddings else ("tied", "untied")
    raise HypernetCheckpointError(
      f"{where}: {untied_field}={config.predict_output_embeddings} means a {want} base, but {name} is {have}"
    )
  if config.predict_output_bias != (embeddings.bias is not None):
    predicts, has = ("an", "none") if config.predict_output_bias else ("no", "one")
    raise HypernetCheckpointError(f"{where}: predicts {predicts} LM-head bias, but {name} has {has}")
