"""Parameters and layer stacks shared by the families: logically named params, dense projections, the scanned
layer stack, and a family module's params as a whole (random init, abstract shapes, logical axes).

Every parameter is declared with logical axis names (see `LOGICAL_AXIS_NAMES`) so that one
sharding-rules table can map them to mesh axes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LOGICAL_AXIS_NAMES = ("vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers")
"""Every logical axis name a base-model parameter may carry (scanned layers add "layers" in front)."""

_NORMAL_002 = nn.initializers.normal(0.02)


def param(
  module: nn.Module,
  name: str,
  axes: tuple[str | None, ...],
  shape: tuple[int, ...],
  init=_NORMAL_002,
  dtype=jnp.float32,
) -> jax.Array:
  """Declares a parameter whose dimensions carry logical axis names (None: a dimension with no name)."""
  # unbox=True is the default; saying it selects the overload of Flax's `param` that returns the array inside the
  # LogicallyPartitioned box (the one without it types the result as the box).
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype, unbox=True)


def dense(
  module: nn.Module,
  name: str,
  x,
  spec: str,
  shape: tuple[int, ...],
  axes: tuple[str | None, ...],
  dtype,
  bias_shape: tuple[int, ...] | None = None,
  bias_axes: tuple[str, ...] = (),
):
  """`einsum(spec, x, kernel)` (+ bias) in `dtype`, declaring the kernel `name` and, when `bias_shape` is given, its
  bias (zeros at init), named after the kernel with "_bias" for any "_proj" ("q_proj" -> "q_bias").

  A module whose `matmul_dtype` is set (e.g. bfloat16 under a float32 `dtype`) takes the product's inputs in that
  dtype and accumulates in float32 (`low_precision_einsum`); everything around the product stays in `dtype`.
  """
  kernel = param(module, name, axes, shape)
  matmul_dtype = getattr(module, "matmul_dtype", None)
  if matmul_dtype is None or jnp.dtype(matmul_dtype) == jnp.dtype(dtype):
    y = jnp.einsum(spec, x, kernel.astype(dtype))
  else:
    y = jnp.asarray(low_precision_einsum(spec, x, kernel, jnp.dtype(matmul_dtype)), dtype)
  if bias_shape is not None:
    bias_name = name.removesuffix("_proj") + "_bias"
    y = y + param(module, bias_name, bias_axes, bias_shape, nn.initializers.zeros).astype(dtype)
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def low_precision_einsum(spec: str, x, kernel, matmul_dtype):
  """`einsum(spec, x, kernel)` with both inputs rounded to `matmul_dtype` and float32 accumulation, forward and
  backward (float32 result and cotangents).

  The point is speed where the hardware multiplies `matmul_dtype` much faster than float32 (bfloat16: TPUs, GPUs,
  and CPUs with AMX, where XLA's float32-accumulating bfloat16 products ran ~5x faster than float32 ones on 2
  Sapphire Rapids cores). Both backward products are written as einsums of their own, with the cotangent rounded
  too: JAX's transpose of the forward product would multiply the float32 cotangent by the bfloat16 kernel, which
  XLA does in float32.
  """
  return jnp.einsum(spec, x.astype(matmul_dtype), kernel.astype(matmul_dtype), preferred_element_type=jnp.float32)


def _low_precision_einsum_fwd(spec, x, kernel, matmul_dtype):
  return low_precision_einsum(spec, x, kernel, matmul_dtype), (x, kernel)


def _low_precision_einsum_bwd(spec, matmul_dtype, residuals, g):
  x, kernel = residuals
  x_spec, rest = spec.split(",")
  kernel_spec, out_spec = rest.split("->")
  g, low_x, low_kernel = g.astype(matmul_dtype), x.astype(matmul_dtype), kernel.astype(matmul_dtype)
  dx = jnp.einsum(f"{out_spec},{kernel_spec}->{x_spec}", g, low_kernel, preferred_element_type=jnp.float32)
  dkernel = jnp.einsum(f"{x_spec},{out_spec}->{kernel_spec}", low_x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


low_precision_einsum.defvjp(_low_precision_einsum_fwd, _low_precision_einsum_bwd)


def mlp(module: nn.Module, x_btd, intermediate_size: int, activation, dtype):
  """The feed-forward block of GPT-2 and BERT: `fc_in_proj` [D, F], `activation`, `fc_out_proj` [F, D], with biases."""
  d, f = x_btd.shape[-1], intermediate_size
  x_btf = dense(module, "fc_in_proj", x_btd, "btd,df->btf", (d, f), ("embed", "mlp"), dtype, (f,), ("mlp",))
  return dense(
    module, "fc_out_proj", activation(x_btf), "btf,fd->btd", (f, d), ("mlp", "embed"), dtype, (d,), ("embed",)
  )


def scanned_layers(layer: type[nn.Module], num_layers: int, in_axes: tuple, remat: bool) -> Any:
  """`layer` applied `num_layers` times by `nn.scan`: its params get a leading "layers" axis, which keeps compile
  time flat in depth. The layer's first argument and first result is the carried hidden state; `in_axes` says
  how each further argument is fed (`nn.broadcast`: the same to every layer; 0: sliced along its first axis).

  With `remat`, each layer is recomputed in the backward pass instead of keeping its activations (`nn.remat`):
  only the layer inputs stay in memory.
  """
  if remat:
    # prevent_cse=False is safe inside scan (its loop already keeps XLA from merging the recomputation with the
    # forward pass) and lets XLA optimise the recomputed layer.
    layer = nn.remat(layer, prevent_cse=False)
  return nn.scan(
    layer,
    variable_axes={"params": 0},
    split_rngs={"params": True},
    # Flax leaves scan's in_axes unannotated with default 0, so pyright takes it to be an int.
    in_axes=in_axes,  # pyright: ignore[reportArgumentType]
    length=num_layers,
    metadata_params={nn.PARTITION_NAME: "layers"},
  )


def _abstract_variables(module: nn.Module) -> Any:
  return jax.eval_shape(lambda: module.init(jax.random.key(0), input_ids=jnp.zeros((1, 2), jnp.int32)))


def module_abstract_params(module: nn.Module) -> Any:
  """`jax.ShapeDtypeStruct` of every parameter of a family module, without allocating any."""
  return nn.meta.unbox(_abstract_variables(module)["params"])


def module_logical_axes(module: nn.Module) -> Any:
  """The logical `PartitionSpec` of every parameter of a family module, without allocating them."""
  return nn.get_partition_spec(_abstract_variables(module))["params"]


def init_module_params(module: nn.Module, rng) -> Any:
  """Random float32 params of a family module (plain arrays). Jitted: linen's eager init runs the scanned
  layers op by op, which is much slower to dispatch."""
  init = jax.jit(lambda key: module.init(key, input_ids=jnp.zeros((1, 2), jnp.int32))["params"])
  return nn.meta.unbox(init(rng))
