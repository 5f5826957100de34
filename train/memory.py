"""Per-device memory of a training config on a mesh, from abstract shapes only (`zett train CONFIG --dry-run`).

Nothing is allocated and no weights are read: parameter shapes come from `jax.eval_shape` of the modules' init, their
per-device shards from the same sharding rules the run uses (`train.mesh`), the optimiser state from
`jax.eval_shape(optimizer.init)`. Activations are counted per token (base) and per subtoken position (hypernetwork)
from the layer structure: the tensors a layer keeps for its backward pass, with the dimensions tensor parallelism
splits (heads, MLP) divided by the "model" axis, plus the batch-vocabulary logits and the widest gradient in flight.

What each term covers:
  hypernetwork params (f32 master copy), gradients (f32), optimiser state (AdamW moments, plus the accumulated
  gradient of `optax.MultiSteps` when `optimizer.grad_accumulation_steps` > 1), the frozen base (in
  `model.param_dtype`), activations of the base over this device's sequences and of the hypernetwork over this
  device's batch-vocabulary rows (`sampler.batch_vocab_size`: tokens of the batch + negatives, split over "data"), and
  the [sequences, tokens, batch vocabulary] logits.

Remat (the config's `remat: true`) keeps only each layer's input and recomputes one layer at a time in the backward
pass, in the base and in the hypernetwork: the activation terms then count the kept layer inputs, and the term "remat:
layer being recomputed" the larger of one base layer and one hypernetwork layer. The estimate follows the configured
value; with remat off the table adds a "with remat" what-if column.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from zett.errors import ZettError
from zett.train.config import TrainConfig
from zett.train.mesh import RULE_TABLES, MeshError, logical_to_spec

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Target:
  devices: int
  memory_gib: float
  note: str


TARGETS: dict[str, Target] = {
  "v4-8": Target(4, 32, "TPU v4: 4 chips x 32 GiB HBM, 1 host"),
  "v4-32": Target(16, 32, "TPU v4: 16 chips x 32 GiB HBM, 4 hosts"),
  "v4-64": Target(32, 32, "TPU v4: 32 chips x 32 GiB HBM, 8 hosts"),
  "v5p-64": Target(32, 95, "TPU v5p: 32 chips x 95 GiB HBM, 8 hosts"),
  "v5e-16": Target(16, 16, "TPU v5e: 16 chips x 16 GiB HBM, 4 hosts"),
  "8xa100-80gb": Target(8, 80, "8 x A100 80 GB, 1 node"),
  "8xh100-80gb": Target(8, 80, "8 x H100 80 GB, 1 node"),
  "1xa100-40gb": Target(1, 40, "1 x A100 40 GB"),
}

# config.json subsets of the recipe bases that are hub names, so a dry run needs neither network nor weights.
KNOWN_BASES: dict[str, dict[str, Any]] = {
  "mistralai/Mistral-7B-v0.1": dict(
    model_type="mistral",
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=32768,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    sliding_window=4096,
    tie_word_embeddings=False,
  ),
  "TinyLlama/TinyLlama_v1.1": dict(
    model_type="llama",
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
  ),
  "FacebookAI/xlm-roberta-base": dict(
    model_type="xlm-roberta",
    vocab_size=250002,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    layer_norm_eps=1e-5,
  ),
}

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


class DryRunError(ZettError, ValueError):
  """A config whose memory cannot be estimated (unknown base, mesh that does not fit)."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device by component; `total` sums them."""

  mesh: dict[str, int]
  components: dict[str, float]
  params: dict[str, int]

  @property
  def total(self) -> float:
    return float(sum(self.components.values()))


# ----------------------------------------------------------------------------------------------- abstract shapes


def _abstract_base(config: TrainConfig):
  """(family, family config, boxed abstract params) of the base, without reading weights where possible."""
  spec = config.model.base
  compute = jnp.bfloat16 if config.model.compute_dtype == "bfloat16" else jnp.float32
  hf = None
  if spec in KNOWN_BASES:
    hf = KNOWN_BASES[spec]
  elif Path(spec).is_dir() and (Path(spec) / "config.json").is_file():
    from zett.interop.hf import read_config

    hf = read_config(spec)
  if hf is not None:
    from zett.models.family import family_for_model_type

    family = family_for_model_type(hf["model_type"])
    try:
      family_config = family.config_from_hf(hf)
    except (KeyError, TypeError, ValueError) as e:  # an architecture option zett does not support
      raise DryRunError(f"model.base {spec}: unsupported or incomplete config ({e!r})") from None
  else:
    try:  # tiny test bases and GGUF files: small enough to build/read
      from zett.train.setup import load_base

      base = load_base(config)
    except Exception as e:  # a hub name we have no config for, a missing file
      raise DryRunError(
        f"model.base {spec}: cannot get its architecture offline ({e}); point model.base at a "
        "local folder with config.json"
      ) from None
    family, family_config = base.family, base.config
  module = family.make_module(family_config, compute)
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), input_ids=jnp.zeros((1, 2), jnp.int32)))["params"]
  return family, family_config, boxed


def _unbox(boxed, dtype=None):
  import flax.linen as nn

  shapes = nn.meta.unbox(boxed)
  if dtype is not None:
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), shapes)
  return shapes


def _specs(boxed, shapes, mesh_shape: dict[str, int], rules):
  import flax.linen as nn

  logical = nn.get_partition_spec(boxed)
  return jax.tree.map(
    lambda spec, a: logical_to_spec(tuple(spec), tuple(a.shape), _MeshShape(mesh_shape), rules),
    logical,
    shapes,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


@dataclasses.dataclass(frozen=True)
class _MeshShape:
  """Stands in for a `Mesh` where only `.shape` is read (the sharding rules, `mesh.MeshShape`), so no devices are
  needed."""

  shape: dict[str, int]


def _shard_bytes(array, spec: PartitionSpec, mesh_shape: dict[str, int]) -> float:
  axes = tuple(spec) + (None,) * (len(array.shape) - len(spec))
  elements = math.prod(-(-size // (mesh_shape[a] if a else 1)) for size, a in zip(array.shape, axes))
  return float(elements * np.dtype(array.dtype).itemsize)


def _tree_bytes(shapes, specs, mesh_shape) -> float:
  return sum(
    _shard_bytes(a, s, mesh_shape)
    for a, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)))
  )


def mesh_shape_for(config: TrainConfig, devices: int) -> dict[str, int]:
  model = config.mesh.model
  data = config.mesh.data if config.mesh.data != -1 else devices // model
  if data < 1 or data * model != devices:
    raise MeshError(
      f"mesh data={config.mesh.data} x model={model} does not fit {devices} devices "
      "(the product must equal the device count)"
    )
  if config.data.batch_size % data:
    raise MeshError(f"data.batch_size={config.data.batch_size} is not divisible by the mesh's data axis ({data})")
  return {"data": data, "model": model}


# ----------------------------------------------------------------------------------------------- activations


def _layer_bytes(
  width: int, heads: int, kv_heads: int, head_dim: int, mlp: int, gated: bool, context: int, model: int, c: int
) -> float:
  """Bytes one transformer layer keeps per position for its backward pass (compute dtype `c`).

  Width-sized tensors (norm outputs, attention/MLP outputs, residuals) stay whole under tensor parallelism; q/k/v,
  the attention context and the MLP hidden are split over the "model" axis, as are the f32 scores and the probs.
  """
  q, kv = heads * head_dim, kv_heads * head_dim
  whole = 6 * width
  split = (2 * q + 2 * kv + q) + (3 if gated else 2) * mlp  # q,k (pre/post rotary) v, context; MLP hidden(s)
  attention = heads * context * (4 + c)  # f32 scores + probs in the compute dtype
  return c * whole + (c * split + attention) / model


def _activation_bytes(config: TrainConfig, base_config, hypernet_config, mesh_shape, remat: bool) -> dict[str, float]:
  data, model = mesh_shape["data"], mesh_shape["model"]
  c = _DTYPE_BYTES[config.model.compute_dtype]
  sequences = -(-config.data.batch_size // data)
  tokens = sequences * config.data.sequence_length
  num_specials = 16  # the sampler's static rows also hold the base's special tokens (a handful)
  rows = config.sampler.batch_vocab_size or config.sampler.vocab_size + num_specials
  rows = -(-rows // data) * data
  rows_local = rows // data
  positions = rows_local * hypernet_config.surface_length

  d = base_config.hidden_size
  heads = base_config.num_attention_heads
  kv_heads = getattr(base_config, "num_key_value_heads", heads)
  head_dim = getattr(base_config, "head_dim", d // heads)
  gated = hasattr(base_config, "num_key_value_heads")  # Llama-style gated MLP (gate, up, product)
  base_layer = _layer_bytes(
    d, heads, kv_heads, head_dim, base_config.intermediate_size, gated, config.data.sequence_length, model, c
  )
  base_layers = base_config.num_hidden_layers

  h = hypernet_config.body_hidden_size
  nh = hypernet_config.body_num_heads
  hn_layer = _layer_bytes(
    h, nh, nh, h // nh, hypernet_config.body_mlp_size, False, hypernet_config.surface_length, model, c
  )
  hn_layers = hypernet_config.num_layers
  # Gathered base rows in f32 (in, and out for untied bases), their compute-dtype concatenation, the projection.
  hn_inputs = 4 * hypernet_config.input_width + c * hypernet_config.input_width + 2 * c * h

  if remat:  # keep each layer's input; recompute (and hold) one layer at a time in the backward pass
    base_act = tokens * base_layers * c * d
    hn_act = positions * (hn_inputs + hn_layers * c * h)
    # The base's backward pass ends before the hypernetwork's begins, so only the larger recomputed layer counts.
    recomputed = max(tokens * base_layer, positions * hn_layer)
  else:
    base_act = tokens * base_layers * base_layer
    hn_act = positions * (hn_inputs + hn_layers * hn_layer)
    recomputed = 0.0
  # The backward pass frees a layer's saved tensors as it consumes them, so beyond them only the gradient of the
  # widest tensor being processed is in flight.
  base_widest = c * max(d, ((3 if gated else 2) * base_config.intermediate_size) // model)
  hn_widest = c * max(hypernet_config.input_width, (3 * h) // model, hypernet_config.body_mlp_size // model)
  in_flight = max(tokens * base_widest, positions * hn_widest)
  # Logits over the batch vocabulary (f32): logits, masked logits, softmax, their gradient.
  logits = 4 * 4 * tokens * rows
  # Predicted embeddings of all rows (every device needs them for its sequences): f32 in/out + gradients.
  tables = 2 * 4 * rows * hypernet_config.embedding_dim * (2 if hypernet_config.predict_output_embeddings else 1)
  return {
    "activations: base": base_act,
    "activations: hypernetwork": hn_act,
    "remat: layer being recomputed": recomputed,
    "logits (batch vocabulary)": logits,
    "predicted embedding tables": tables,
    "gradients in flight": in_flight,
  }


# ----------------------------------------------------------------------------------------------- estimate


def estimate(config: TrainConfig, devices: int, remat: bool | None = None) -> MemoryEstimate:
  """Per-device memory of `config` on `devices` devices (the config's mesh), from abstract shapes.

  Args:
    remat: estimate with (True) or without (False) rematerialisation; None follows `config.remat`.
  """
  from zett.hypernet import HypernetConfig
  from zett.hypernet.model import abstract_params
  from zett.train.state import make_optimizer

  remat = config.remat if remat is None else remat
  mesh_shape = mesh_shape_for(config, devices)
  rules = RULE_TABLES[config.mesh.rules]
  family, base_config, base_boxed = _abstract_base(config)
  base_dtype = jnp.bfloat16 if config.model.param_dtype == "bfloat16" else jnp.float32
  base_shapes = _unbox(base_boxed, base_dtype)
  base_specs = _specs(base_boxed, base_shapes, mesh_shape, rules)

  embeddings = family.get_embeddings(base_config, base_shapes)
  fields: dict[str, Any] = dict(
    embedding_dim=int(embeddings.input.shape[1]),
    base_vocab_size=int(embeddings.input.shape[0]),
    predict_output_embeddings=embeddings.output is not None,
    predict_output_bias=embeddings.bias is not None,
    num_layers=config.hypernet.num_layers,
    surface_length=config.hypernet.surface_max_length,
  )
  fields.update(config.hypernet.options)
  hypernet_config = HypernetConfig(**fields)
  hn_boxed = abstract_params(hypernet_config, embeddings)
  hn_shapes = _unbox(hn_boxed, jnp.float32)
  hn_specs = _specs(hn_boxed, hn_shapes, mesh_shape, rules)

  optimizer = make_optimizer(config.optimizer, config.num_train_steps)
  opt_shapes = jax.eval_shape(optimizer.init, hn_shapes)
  import optax

  opt_specs = optax.tree_map_params(
    optimizer,
    lambda _, spec: spec,
    opt_shapes,
    hn_specs,
    transform_non_params=lambda _: PartitionSpec(),
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )

  hn_bytes = _tree_bytes(hn_shapes, hn_specs, mesh_shape)
  components = {
    "hypernetwork params (f32)": hn_bytes,
    "hypernetwork gradients (f32)": hn_bytes,
    "optimizer state": _tree_bytes(opt_shapes, opt_specs, mesh_shape),
    f"frozen base ({config.model.param_dtype})": _tree_bytes(base_shapes, base_specs, mesh_shape),
  }
  components.update(_activation_bytes(config, base_config, hypernet_config, mesh_shape, remat))
  count = lambda tree: sum(math.prod(a.shape) for a in jax.tree.leaves(tree))  # noqa: E731
  return MemoryEstimate(mesh_shape, components, {"hypernetwork": count(hn_shapes), "base": count(base_shapes)})


def dry_run(
  config: TrainConfig, target: str | None = None, devices: int | None = None, device_memory_gib: float | None = None
) -> str:
  """The `--dry-run` table: per-device memory as configured (and, if remat is off, with it), against the capacity."""
  preset = None
  if target is not None:
    key = target.lower()
    if key not in TARGETS:
      raise DryRunError(f"--target {target}: unknown; choose one of {', '.join(TARGETS)}")
    preset = TARGETS[key]
  devices = devices or (preset.devices if preset else jax.device_count())
  capacity = device_memory_gib or (preset.memory_gib if preset else None)
  configured = estimate(config, devices)
  # With remat off, show what turning it on would give; with it on, the configured column already is that.
  what_if = None if config.remat else estimate(config, devices, remat=True)
  where = f"{target} ({preset.note})" if preset else f"{devices} device(s)"
  heading = "as configured" + (" (remat)" if config.remat else "")
  lines = [
    f"dry run: {config.model.base} on {where}, mesh {configured.mesh}, remat {'on' if config.remat else 'off'}",
    f"  hypernetwork {configured.params['hypernetwork']:,} params, base {configured.params['base']:,} params; "
    f"{config.data.batch_size} sequences x {config.data.sequence_length} tokens per micro-step, "
    f"{config.optimizer.grad_accumulation_steps} micro-step(s) per update",
    f"  {'per device':<34}{heading:>23}" + ("" if what_if is None else f"{'with remat*':>15}"),
  ]

  def row(name, value, other):
    return f"  {name:<34}{value / GiB:>19.3f} GiB" + ("" if other is None else f"{other / GiB:>11.3f} GiB")

  for name, value in configured.components.items():
    lines.append(row(name, value, None if what_if is None else what_if.components[name]))
  lines.append(row("total", configured.total, None if what_if is None else what_if.total))
  if capacity:
    verdict = lambda total: "fits" if total <= 0.9 * capacity * GiB else "DOES NOT FIT"  # noqa: E731
    line = f"  {'capacity (90% usable)':<34}{0.9 * capacity:>19.3f} GiB -> {verdict(configured.total)} as configured"
    lines.append(line + ("" if what_if is None else f", {verdict(what_if.total)} with remat"))
  if what_if is not None:
    lines.append(
      "  * what-if: remat keeps one activation per layer and recomputes the rest in the backward pass; "
      "turn it on with `remat=true`."
    )
  return "\n".join(lines)
