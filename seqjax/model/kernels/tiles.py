"""What the Pallas kernels share: Triton-sized tiles and a `pallas_call` over batch blocks.

Triton's tiles have power-of-two sides and its `dot` needs at least 16 rows and
16 columns, so every kernel pads: the batch to `BLOCK_B` rows a program, H and
every feature axis to `padded(n)`. Padded weights are zero, so padded units and
features never reach a real one; padded batch rows are sliced off.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning

Array = jax.Array

BLOCK_B = 16  # batch rows per program: Triton's dot needs at least 16

# The most float32 weights a program holds in registers across its time loop: 16384
# floats over 4 warps (128 threads) is 128 registers a thread, half of the 255 a thread
# may have, leaving the rest for the carry and the gate math. Above it, weights are
# loaded every step (from L1/L2) instead of spilling.
RESIDENT_FLOATS = 4 * 64 * 64


@dataclasses.dataclass(frozen=True)
class Tuning:
  """How a kernel maps onto a GPU (static; in interpret mode only `resident` matters, and
  only to which code runs, not to the result).

  Attributes:
    num_warps: Triton warps per program.
    resident: True loads the weights once and holds them across the time loop
      (registers); False loads them every step, for weights too large to hold
      without spilling.
  """
  num_warps: int = 4
  resident: bool = True


def padded(n: int) -> int:
  """A tile side for n: a power of two >= 16."""
  return max(16, pl.next_power_of_2(n))


def padded_batch(batch: int) -> int:
  """The batch padded to whole blocks of `BLOCK_B` rows."""
  return -(-batch // BLOCK_B) * BLOCK_B


def pad(a: Array, shape: tuple[int, ...]) -> Array:
  """`a` zero-padded at the end of each axis to `shape`."""
  return jnp.pad(a, [(0, n - d) for d, n in zip(a.shape, shape, strict=True)])


def pad_last(a: Array, n: int) -> Array:
  """`a` zero-padded at the end of its last axis to n."""
  return pad(a, (*a.shape[:-1], n))


def pad_gates(a: Array, hidden: int, hp: int) -> Array:
  """[..., 4H] -> [..., 4Hp], each gate's block (i, f, g, o) padded with zeros."""
  lead = a.shape[:-1]
  a = a.reshape(*lead, 4, hidden)
  a = jnp.pad(a, [(0, 0)] * (len(lead) + 1) + [(0, hp - hidden)])
  return a.reshape(*lead, 4 * hp)


def gate_tiles(ref, hp: int, dtype: Any) -> list[Array]:
  """The four gate blocks of a [K, 4Hp] weight ref, each [K, Hp] in `dtype`.

  Triton's lowering slices refs, not values, so each gate is its own tile.
  """
  return [ref[:, pl.ds(k * hp, hp)].astype(dtype) for k in range(4)]


def held_or_loaded(load, tuning: Tuning):
  """A function returning the weights `load()` reads from refs: read once here and held
  across the time loop when `tuning.resident`, else read again at each call (each step)."""
  if tuning.resident:
    held = load()
    return lambda: held
  return load


def gates(z: list[Array]) -> tuple[Array, Array, Array, Array]:
  """The activated gates (i, f, g, o) from their pre-activations z, each [Bb, Hp]."""
  return jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jnp.tanh(z[2]), jax.nn.sigmoid(z[3])


def lstm_update(z: list[Array], c: Array) -> tuple[Array, Array]:
  """(h, c) after one step from the four gate pre-activations z (i, f, g, o), each [Bb, Hp]."""
  i, f, g, o = gates(z)
  c = f * c + i * g
  return o * jnp.tanh(c), c


def matmul(a: Array, b: Array, dtype: Any, precision: Any) -> Array:
  """a @ b with `dtype` operands and a float32 result."""
  return jnp.dot(a.astype(dtype), b, precision=precision, preferred_element_type=jnp.float32)


def compiler_params(interpret: bool, num_warps: int = 4) -> dict[str, Any]:
  """`pallas_call`'s Triton options; none when interpreted. One stage: the loops carry
  their own prefetch, and Triton's pipeliner has nothing to overlap in a recurrence."""
  if interpret:
    return {}
  from jax.experimental.pallas import triton as pltriton
  return {"compiler_params": pltriton.CompilerParams(num_warps=num_warps, num_stages=1)}


def call(kernel, inputs, outputs, *, interpret: bool, num_warps: int = 4, **static):
  """`pallas_call` of `kernel` with a grid over batch blocks of `BLOCK_B` rows.

  The batch is padded to whole blocks here (zero rows, sliced off the outputs),
  and, where JAX sees several devices, the call is split over a mesh along the
  batch (`_partitioned`): under a `jit` whose inputs split the batch over
  devices, each device runs the kernel on its own rows.

  Args:
    kernel: the kernel body, called with the input refs, then the output refs,
      and `static` by keyword.
    inputs: (array, batch axis or None) pairs; the batch axis is cut into
      blocks, None passes the whole array to each program (weights).
    outputs: (ShapeDtypeStruct, batch axis or None) pairs, likewise.
    interpret: Pallas' interpret mode (any backend) instead of Triton.
    num_warps: Triton warps per program (ignored when interpreted).
    **static: the kernel's static keyword arguments.

  Returns:
    The outputs, a list in the order of `outputs`.
  """
  in_axes = tuple(axis for _, axis in inputs)
  out_axes = tuple(axis for _, axis in outputs)
  batches = {a.shape[axis] for a, axis in inputs + outputs if axis is not None}
  assert len(batches) == 1, f"one batch size for every batched operand; got {batches}"

  def spec(shape, axis):
    block = list(shape)
    if axis is not None:
      block[axis] = BLOCK_B
    index = (lambda axis: lambda b: tuple(b if d == axis else 0 for d in range(len(shape))))(axis)
    return pl.BlockSpec(tuple(block), index)

  def with_batch(shape, axis, rows):
    return tuple(rows if d == axis else n for d, n in enumerate(shape))

  def run(*arrays):  # on whatever rows this device holds
    rows = next(a.shape[axis] for a, axis in zip(arrays, in_axes, strict=True)
                if axis is not None)
    padded_rows = padded_batch(rows)
    arrays = [a if axis is None else pad(a, with_batch(a.shape, axis, padded_rows))
              for a, axis in zip(arrays, in_axes, strict=True)]
    shapes = [jax.ShapeDtypeStruct(with_batch(o.shape, axis, padded_rows), o.dtype)
              for (o, _), axis in zip(outputs, out_axes, strict=True)]
    outs = pl.pallas_call(
        functools.partial(kernel, **static),
        grid=(padded_rows // BLOCK_B,),
        in_specs=[spec(a.shape, axis) for a, axis in zip(arrays, in_axes, strict=True)],
        out_specs=[spec(o.shape, axis) for o, axis in zip(shapes, out_axes, strict=True)],
        out_shape=shapes,
        interpret=interpret, **compiler_params(interpret, num_warps))(*arrays)
    return tuple(o if axis is None else jax.lax.slice_in_dim(o, 0, rows, axis=axis)
                 for o, axis in zip(outs, out_axes, strict=True))

  arrays = [a for a, _ in inputs]
  if jax.device_count() == 1:
    # Nothing to split; and JAX 0.12 lowers a custom_partitioning call only with real
    # devices, not for another platform's abstract ones (the GPU lowering tests on a CPU).
    return list(run(*arrays))
  partitioned = _partitioned(run, [(a.ndim, axis) for a, axis in inputs],
                             [(len(o.shape), axis) for o, axis in outputs])

  # Under vmap (a sweep's members), pallas_call's own batching rule adds a grid axis;
  # XLA's partitioner has no vmap of its own.
  @jax.custom_batching.custom_vmap
  def call_once(*arrays):
    return partitioned(*arrays)

  @call_once.def_vmap
  def _(axis_size, in_batched, *arrays):
    del axis_size
    outs = jax.vmap(run, in_axes=[0 if b else None for b in in_batched])(*arrays)
    return outs, tuple(True for _ in outs)

  return list(call_once(*arrays))


def _partitioned(run, operands, results):
  """`run` as a `custom_partitioning` function that XLA splits along the batch.

  A Pallas call is opaque to XLA's partitioner, which would otherwise gather
  the whole batch onto every device. Here the batch split of the batched
  operands (over whichever mesh axes) becomes every batched operand's and
  result's, the other axes are replicated, and each device runs `run` on its
  rows. On one device the function is inlined. `operands`, `results`: (rank,
  batch axis or None) of each.
  """
  def split(mesh, arg_shapes):
    batch = None  # the first batched operand whose batch axis is split over the mesh
    for a, (_, axis) in zip(arg_shapes, operands, strict=True):
      # A GSPMDSharding (no mesh axis names) is read as unsplit: correct, each device then
      # computes the whole batch.
      if axis is not None and isinstance(a.sharding, jax.sharding.NamedSharding):
        spec = tuple(a.sharding.spec)
        if axis < len(spec) and spec[axis] is not None:
          batch = spec[axis]
          break

    def sharding(ndim, axis):
      return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
          *[batch if d == axis else None for d in range(ndim)]))
    return (tuple(sharding(*o) for o in operands), tuple(sharding(*r) for r in results))

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    args, outs = split(mesh, arg_shapes)
    return mesh, run, outs, args

  def infer(mesh, arg_shapes, result_shape):
    del result_shape
    return split(mesh, arg_shapes)[1]

  # Shardy's rule: the batch is one factor "b" shared by every batched operand and
  # result; every other axis is a factor of its own.
  names = (f"x{i}" for i in range(sum(n for n, _ in operands + results)))
  factors = [" ".join("b" if d == axis else next(names) for d in range(ndim))
             for ndim, axis in operands + results]
  rule = f"{', '.join(factors[:len(operands)])} -> {', '.join(factors[len(operands):])}"
  fn = custom_partitioning(run)
  fn.def_partition(partition=partition, infer_sharding_from_operands=infer, sharding_rule=rule)
  return fn
