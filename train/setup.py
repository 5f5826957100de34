"""Everything a run needs before its first step, in the order that makes bad input fail before compilation.

`prepare(config, resume)`: cheap checks (data paths, checkpoint directory, held-out tokenizer paths) -> base model and
tokenizer -> hypernetwork config (checked against an init checkpoint / the resumed checkpoint) -> mesh, shardings and
the start-up report -> state (fresh, from `hypernet.init_checkpoint`, or restored) -> jitted step and eval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from zett.errors import ZettError
from zett.train import mesh as mesh_lib
from zett.train.batch import BATCH_KEYS, PER_SEQUENCE_KEYS, SCALAR_KEYS
from zett.train.checkpoint import Checkpointer, CheckpointError
from zett.train.config import ConfigError, TrainConfig, from_dict, to_dict
from zett.train.data import check_sources
from zett.train.state import create_sharded_state, make_optimizer, state_shardings
from zett.train.step import LossSpec, jit_eval_sums, jit_train_step
from zett.train.vocab import check_tokenizer_specs, training_base_tokenizer

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Sections that may change between a run and its resumption without changing its results (remat trades memory for
# compute only, so a run that no longer fits can resume with it on; base_matmul_dtype changes only the rounding of the
# frozen base's products, so a leg can switch to the faster ones).
# The run folder's own location is no part of the run's identity: a moved or copied run folder resumes.
_RESUMABLE_CHANGES = ("logging", "eval", "checkpoint", "num_train_steps", "remat", "base_matmul_dtype", "run_dir")


class TrainSetupError(ZettError, ValueError):
  """A run that cannot start: the message names the file/setting and the problem."""


@dataclasses.dataclass
class Run:
  config: TrainConfig
  base: Any
  base_tokenizer: Any
  hypernet_config: Any
  spec: LossSpec
  mesh: Any
  optimizer: Any
  base_params: Any
  state: Any
  state_shardings: Any
  train_step: Callable
  eval_sums: Callable
  """LM sums of an evaluation batch given the predicted rows of its vocabulary; see `train.step.jit_eval_sums`."""
  checkpointer: Checkpointer
  report: str
  resumed_step: int | None
  data_state: dict | None


def load_base(config: TrainConfig):
  """The frozen base `BaseModel` (float32 or bf16 weights as configured; its module rematerialises if `remat`)."""
  base = _load_base(config)
  if config.remat:
    base = dataclasses.replace(base, module=base.module.clone(remat=True))
  return base


def _load_base(config: TrainConfig):
  compute = _DTYPES[config.model.compute_dtype]
  param = _DTYPES[config.model.param_dtype]
  spec = config.model.base
  if spec.split(":")[0] in ("tiny-llama", "tiny-xlmr"):
    from zett.testing.tiny import tiny_base, tiny_xlmr_base

    build = tiny_base if spec.startswith("tiny-llama") else tiny_xlmr_base
    return build(seed=int(spec.split(":", 1)[1]) if ":" in spec else 0, dtype=compute, param_dtype=param)
  from zett.models.load import load_model

  path = Path(spec)
  if (spec.endswith(".gguf") or spec.startswith(("/", "./", "../"))) and not path.exists():
    raise TrainSetupError(f"model.base: {spec} does not exist")
  return load_model(spec, dtype=compute, param_dtype=param)


def hypernet_config_for(config: TrainConfig, base, base_tokenizer_name: str):
  """The hypernetwork config for this base; an init checkpoint must agree with the base's width and vocabulary."""
  from zett.hypernet import config_for_base
  from zett.hypernet.io import load_hypernet_config

  fields = dict(
    num_layers=config.hypernet.num_layers,
    surface_length=config.hypernet.surface_max_length,
    base_tokenizer=base_tokenizer_name,
  )
  fields.update(config.hypernet.options)
  try:
    hypernet_config = config_for_base(base, **fields)
  except (TypeError, ValueError) as e:  # an unknown option, or values HypernetConfig refuses
    raise ConfigError(f"hypernet.options: {e}") from None
  if config.hypernet.init_checkpoint:
    saved, _ = load_hypernet_config(config.hypernet.init_checkpoint)
    _check_same_base(saved, hypernet_config, f"hypernet.init_checkpoint {config.hypernet.init_checkpoint}")
    # Options that add zero-initialised parameters extend the saved hypernetwork without changing its predictions.
    added = {k: v for k, v in config.hypernet.options.items() if k in _EXTENDING_OPTIONS and v}
    hypernet_config = dataclasses.replace(
      saved, base_model=hypernet_config.base_model, base_weights_sha256=hypernet_config.base_weights_sha256, **added
    )
  return hypernet_config


_EXTENDING_OPTIONS = ("condition_on_vocab_size",)
"""`HypernetConfig` fields a run may switch on over a `hypernet.init_checkpoint` saved without them."""


def loss_spec(config: TrainConfig, base, hypernet_config) -> LossSpec:
  """The step's static description: objective, loss weights, compute dtype, remat (base module from `load_base`)."""
  causal = base.family.is_causal if config.model.objective == "auto" else config.model.objective == "causal"
  return LossSpec(
    hypernet_config,
    base.family,
    base.config,
    base.module,
    causal,
    aux_loss_weight=config.hypernet.aux_loss_weight,
    mlm_probability=config.model.mlm_probability,
    compute_dtype=_DTYPES[config.model.compute_dtype],
    remat=config.remat,
    encoder_buckets=check_encoder_buckets(config, hypernet_config),
  )


def train_loss_spec(config: TrainConfig, spec: LossSpec) -> LossSpec:
  """The training steps' `spec`: the frozen base's products in `base_matmul_dtype` if set (evaluation keeps `spec`)."""
  dtype = base_matmul_dtype(config)
  if dtype is None:
    return spec
  return dataclasses.replace(spec, base_module=spec.base_module.clone(matmul_dtype=_DTYPES[dtype]))


def base_matmul_dtype(config: TrainConfig) -> str | None:
  """`config.base_matmul_dtype` with "auto" decided for this machine: bfloat16 products where they are fast (GPUs,
  TPUs, CPUs with AMX), else None (the compute dtype's)."""
  if config.base_matmul_dtype != "auto":
    return config.base_matmul_dtype
  if jax.default_backend() != "cpu":
    return "bfloat16"
  return "bfloat16" if "amx_bf16" in cpu_flags() else None


def cpu_flags() -> set[str]:
  """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    return set()
  return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def check_encoder_buckets(config: TrainConfig, hypernet_config):
  if not config.hypernet.encoder_buckets:
    return None
  from zett.hypernet.model import check_buckets

  try:
    return check_buckets(hypernet_config, config.hypernet.encoder_buckets)
  except ValueError as e:
    raise ConfigError(f"hypernet.encoder_buckets: {e}") from None


def _check_same_base(saved, current, where: str) -> None:
  for field, what in (
    ("embedding_dim", "width"),
    ("base_vocab_size", "vocabulary size"),
    ("predict_output_embeddings", "untied output embeddings"),
    ("predict_output_bias", "output bias"),
  ):
    if getattr(saved, field) != getattr(current, field):
      raise TrainSetupError(
        f"{where} was trained for a base with {what} {getattr(saved, field)}, but base "
        f"{current.base_model} has {what} {getattr(current, field)}"
      )


def _check_resume_config(config: TrainConfig, saved: dict, checkpointer: Checkpointer) -> None:
  current = to_dict(config)
  saved_train = saved.get("train", {})
  differing = sorted(
    k for k in set(current) | set(saved_train) if k not in _RESUMABLE_CHANGES and current.get(k) != saved_train.get(k)
  )
  if differing:
    raise TrainSetupError(
      f"--resume: config section(s) {', '.join(differing)} differ from the checkpoint in "
      f"{checkpointer.directory}; resume with the same config or start a new run_dir"
    )
  from_dict(saved_train)  # the saved config must still parse


def base_logical_axes(base):
  import flax.linen as nn

  ids = jnp.zeros((1, 2), jnp.int32)
  abstract = jax.eval_shape(lambda: base.module.init(jax.random.key(0), input_ids=ids))
  return nn.get_partition_spec(abstract)["params"]


def batch_shardings(mesh) -> dict:
  """Sequences over "data"; vocabulary rows over "data" too (the hypernetwork's work splits by row)."""
  out = {}
  for key in BATCH_KEYS:
    if key in SCALAR_KEYS:
      out[key] = mesh_lib.replicated(mesh)
    else:
      out[key] = mesh_lib.batch_sharding(mesh, 2 if key in PER_SEQUENCE_KEYS + ("surface_ids",) else 1)
  return out


def prepare(config: TrainConfig, resume: bool = False, devices=None, log=print) -> Run:
  """Builds a `Run` (on `devices`, default all); every input error is raised before anything is compiled."""
  check_sources(config.data)
  check_tokenizer_specs(config.eval.heldout_tokenizers)
  if resume and not config.checkpoint_dir.is_dir():  # before the Checkpointer creates an empty one
    raise CheckpointError(f"--resume: no checkpoint in {config.checkpoint_dir} (the folder does not exist)")
  checkpointer = Checkpointer(config.checkpoint_dir, config.checkpoint, config.optimizer.grad_accumulation_steps)
  latest = checkpointer.latest_step()
  if resume and latest is None:
    raise CheckpointError(f"--resume: no checkpoint in {checkpointer.directory}")
  if not resume and latest is not None:
    raise CheckpointError(
      f"{checkpointer.directory} already holds checkpoints (latest step {latest}); "
      "pass --resume to continue or choose a new run_dir"
    )
  saved_config = None
  if resume:
    _, saved_config = checkpointer.newest_readable_config(log)
  if saved_config is not None:
    _check_resume_config(config, saved_config, checkpointer)

  base = load_base(config)
  base_tokenizer = training_base_tokenizer(base, config.model.tokenizer)
  hypernet_config = hypernet_config_for(config, base, base_tokenizer.name)
  if saved_config is not None:
    from zett.hypernet.config import HypernetConfig

    _check_same_base(
      HypernetConfig(**saved_config["hypernet"]), hypernet_config, f"checkpoint {checkpointer.directory}"
    )
  spec = loss_spec(config, base, hypernet_config)

  mesh = mesh_lib.make_mesh(config.mesh, devices)
  if config.data.batch_size % mesh.shape["data"]:
    raise mesh_lib.MeshError(
      f"data.batch_size={config.data.batch_size} is not divisible by the mesh's data axis ({mesh.shape['data']})"
    )
  rules = mesh_lib.RULE_TABLES[config.mesh.rules]
  replicated = mesh_lib.replicated(mesh)
  base_shardings = mesh_lib.param_shardings(base_logical_axes(base), base.params, mesh, rules)
  base_params = jax.device_put(base.params, base_shardings)

  from zett.hypernet.model import abstract_params, init_hypernet

  hypernet_logical = mesh_lib.logical_axes_of(abstract_params(hypernet_config, base.embeddings))
  optimizer = make_optimizer(config.optimizer, config.num_train_steps)
  hypernet_shardings = {}

  def shardings_fn(abstract_state):
    hypernet_shardings["params"] = mesh_lib.param_shardings(hypernet_logical, abstract_state.params, mesh, rules)
    return state_shardings(abstract_state, optimizer, hypernet_shardings["params"], replicated)

  init_params = _init_params_fn(config, hypernet_config, init_hypernet)
  embeddings = base.family.get_embeddings(base.config, base_params)
  state, shardings = create_sharded_state(init_params, optimizer, config.seed, shardings_fn, embeddings)
  report = mesh_lib.sharding_report(
    {"hypernetwork (trained)": (state.params, shardings.params), "frozen base": (base_params, base_shardings)}, mesh
  )
  products = base_matmul_dtype(config)
  report += (
    f"\nfrozen base's products in training steps: {products or config.model.compute_dtype} inputs"
    f"{' (base_matmul_dtype: auto)' if config.base_matmul_dtype == 'auto' else ''}"
  )
  if config.mesh.min_sharded_size and mesh.devices.size > 1 and config.mesh.rules != "replicated":
    offenders = mesh_lib.unsharded_offenders(shardings.params, state.params, config.mesh.min_sharded_size)
    offenders += mesh_lib.unsharded_offenders(base_shardings, base_params, config.mesh.min_sharded_size)
    if offenders:
      report += "\nWARNING: unsharded parameters above mesh.min_sharded_size: " + ", ".join(
        f"{name} {shape}" for name, shape, _ in offenders[:8]
      )

  data_state = None
  resumed_step = None
  if resume:
    resumed_step, state, data_state, _ = checkpointer.restore_newest_intact(state, shardings, log)

  batch_sh = batch_shardings(mesh)
  train_step = jit_train_step(train_loss_spec(config, spec), optimizer, shardings, batch_sh, base_shardings, replicated)
  eval_sums = jit_eval_sums(spec, replicated)
  return Run(
    config,
    base,
    base_tokenizer,
    hypernet_config,
    spec,
    mesh,
    optimizer,
    base_params,
    state,
    shardings,
    train_step,
    eval_sums,
    checkpointer,
    report,
    resumed_step,
    data_state,
  )


def _init_params_fn(config: TrainConfig, hypernet_config, init_hypernet):
  loaded = {}
  if config.hypernet.init_checkpoint:
    from zett.hypernet.record import load_hypernetwork

    loaded = load_hypernetwork(config.hypernet.init_checkpoint).params

  # With an init checkpoint the config is the saved one, perhaps extended (`_EXTENDING_OPTIONS`): every saved
  # parameter is loaded, and the added ones keep their (zero) initialisation.
  def init(embeddings):
    fresh = init_hypernet(hypernet_config, embeddings, jax.random.key(config.seed))
    return {**fresh, **jax.tree.map(jnp.asarray, loaded)}

  return init
