"""The device mesh (axes "data", "model") and the ONE table mapping logical parameter names to mesh axes.

Parameters declare logical axis names when they are created (`nn.with_logical_partitioning`): the base families use
"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp" and "layers" (the scan axis); the hypernetwork uses the
"hn_*" names of `hypernet.model.LOGICAL_AXES`. `RULES` maps each to a mesh axis or None (replicated). A dimension
that the mesh axis does not divide is replicated instead, and the start-up report and `unsharded_offenders` name it.

Other layouts are whole alternative tables in `RULE_TABLES`, picked by `mesh.rules` in the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zett.errors import ZettError
from zett.train.config import MeshConfig

MESH_AXES = ("data", "model")

# Frozen base weights are stored FSDP-style: the model width over "data" (gathered layer by layer), the
# heads / MLP / vocabulary dimensions over "model" (tensor parallel). The hypernetwork follows the same scheme.
RULES: dict[str, str | None] = {
  # base families
  "vocab": "model",
  "embed": "data",
  "heads": "model",
  "kv_heads": "model",
  "head_dim": None,
  "mlp": "model",
  "layers": None,
  # hypernetwork
  "hn_input": None,
  "hn_embed": "data",
  "hn_heads": "model",
  "hn_head_dim": None,
  "hn_mlp": "model",
  "hn_out": "model",
  "hn_position": None,
}

RULE_TABLES: dict[str, dict[str, str | None]] = {
  "default": RULES,
  # Everything replicated: the reference for equivalence tests and for tiny runs.
  "replicated": {name: None for name in RULES},
}


class MeshError(ZettError, ValueError):
  """A mesh that does not fit the devices, or a logical name missing from the rules table."""


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
  """A ("data", "model") mesh over `devices` (default: all devices of all processes), laid out by `device_grid`."""
  devices = list(jax.devices() if devices is None else devices)
  model = config.model
  data = config.data if config.data != -1 else len(devices) // model
  if data < 1 or data * model != len(devices):
    raise MeshError(
      f"mesh data={config.data} x model={config.model} does not fit {len(devices)} devices "
      f"(the product must equal the device count)"
    )
  return Mesh(device_grid(data, model, devices), MESH_AXES)


def device_grid(data: int, model: int, devices) -> np.ndarray:
  """[data, model] array of `devices` that follows the interconnect.

  TPU: `mesh_utils.create_device_mesh` lays the axes along the chips' physical torus ("model", the chattiest axis,
  on the nearest neighbours). Several slices (TPU multislice: devices carry distinct `slice_index`): each slice gets a
  [data / slices, model] block and "data" alone crosses the slower data-centre network, so tensor-parallel traffic
  never leaves a slice. Device sets the topology helpers reject (a CPU or a subset of a slice, a "data" axis the
  slices do not divide) fall back to the devices in the given order.
  """
  from jax.experimental import mesh_utils

  devices = list(devices)
  slices = sorted({getattr(d, "slice_index", 0) for d in devices})
  try:
    if len(slices) > 1 and data % len(slices) == 0:
      return mesh_utils.create_hybrid_device_mesh((data // len(slices), model), (len(slices), 1), devices)
    return mesh_utils.create_device_mesh((data, model), devices)
  except (ValueError, NotImplementedError, AssertionError):
    # The helpers raise these for device sets without a known topology; the plain order is still a valid mesh.
    return np.asarray(devices, dtype=object).reshape(data, model)


class MeshShape(Protocol):
  """What `logical_to_spec` reads of a `Mesh`: the size of each named axis (a stand-in needs no devices)."""

  @property
  def shape(self) -> Mapping[str, int]: ...


def logical_to_spec(
  logical_axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh | MeshShape, rules: Mapping[str, str | None]
) -> PartitionSpec:
  """Mesh `PartitionSpec` for one parameter; each mesh axis used at most once, only on dimensions it divides."""
  used: set[str] = set()
  spec = []
  for name, size in zip(logical_axes, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in rules:
      raise MeshError(f"logical axis {name!r} has no rule in the sharding table (add it to train.mesh.RULES)")
    axis = rules[name]
    if axis is None or axis in used or size % mesh.shape[axis]:
      spec.append(None)
    else:
      spec.append(axis)
      used.add(axis)
  return PartitionSpec(*spec)


def _is_spec(x) -> bool:
  return isinstance(x, PartitionSpec)


def logical_axes_of(abstract_boxed) -> Any:
  """Logical `PartitionSpec` tree of a boxed (`nn.with_logical_partitioning`) abstract parameter tree."""
  import flax.linen as nn

  return nn.get_partition_spec(abstract_boxed)


def param_shardings(logical_tree, abstract_params, mesh: Mesh, rules: Mapping[str, str | None]):
  """NamedSharding per parameter from its logical axes (a tree like `abstract_params`)."""

  def one(logical, array):
    return NamedSharding(mesh, logical_to_spec(tuple(logical), tuple(array.shape), mesh, rules))

  return jax.tree.map(one, logical_tree, abstract_params, is_leaf=_is_spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dimension over "data"; everything else replicated."""
  return NamedSharding(mesh, PartitionSpec("data", *([None] * (ndim - 1))))


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def unsharded_offenders(shardings, abstract_params, min_size: int) -> list[tuple[str, tuple[int, ...], int]]:
  """(name, shape, size) of parameters with >= min_size elements that no rule shards, largest first."""
  offenders = []
  flat_sh = jax.tree_util.tree_flatten_with_path(shardings)[0]
  flat_arrays = jax.tree.leaves(abstract_params)
  for (path, sharding), array in zip(flat_sh, flat_arrays):
    size = math.prod(array.shape)
    if size >= min_size and all(axis is None for axis in sharding.spec):
      offenders.append((_path_name(path), tuple(array.shape), size))
  return sorted(offenders, key=lambda o: -o[2])


def sharding_report(groups: Mapping[str, tuple[Any, Any]], mesh: Mesh, max_rows: int = 12) -> str:
  """Start-up text: per group (name -> (abstract params, shardings)) the parameter count and each tensor's spec."""
  lines = [f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {mesh.devices.flat[0].platform} device(s)"]
  for group, (params, shardings) in groups.items():
    flat_sh = jax.tree_util.tree_flatten_with_path(shardings)[0]
    arrays = jax.tree.leaves(params)
    total = sum(math.prod(a.shape) for a in arrays)
    nbytes = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in arrays)
    lines.append(f"{group}: {total:,} parameters ({nbytes / 2**20:.1f} MiB) in {len(arrays)} tensors")
    rows = sorted(zip(flat_sh, arrays), key=lambda r: -math.prod(r[1].shape))
    for (path, sharding), array in rows[:max_rows]:
      spec = ", ".join("-" if a is None else str(a) for a in sharding.spec) or "replicated"
      lines.append(f"  {_path_name(path):<48} {str(tuple(array.shape)):<20} {array.dtype!s:<9} [{spec}]")
    if len(rows) > max_rows:
      lines.append(f"  ... {len(rows) - max_rows} smaller tensors")
  return "\n".join(lines)
