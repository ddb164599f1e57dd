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


def lstm_update(z: list[Array], c: Array) -> tuple[Array, Array]:
  """(h, c) after one step from the four gate pre-activations z (i, f, g, o), each [Bb, Hp]."""
  i, f, g, o = jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jnp.tanh(z[2]), jax.nn.sigmoid(z[3])
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

  Args:
    kernel: the kernel body, called with the input refs, then the output refs,
      and `static` by keyword.
    inputs: (array, batch axis or None) pairs; the batch axis is cut into
      blocks, None passes the whole array to each program (weights). Every
      batch axis must be padded to a multiple of `BLOCK_B`.
    outputs: (ShapeDtypeStruct, batch axis or None) pairs, likewise.
    interpret: Pallas' interpret mode (any backend) instead of Triton.
    num_warps: Triton warps per program (ignored when interpreted).
    **static: the kernel's static keyword arguments.

  Returns:
    The outputs, a list in the order of `outputs`.
  """
  def spec(shape, axis):
    block = list(shape)
    if axis is not None:
      block[axis] = BLOCK_B
    index = (lambda axis: lambda b: tuple(b if d == axis else 0 for d in range(len(shape))))(axis)
    return pl.BlockSpec(tuple(block), index)

  batch = {a.shape[axis] for a, axis in inputs + outputs if axis is not None}
  assert len(batch) == 1 and batch.pop() % BLOCK_B == 0, "inputs padded to whole batch blocks"
  rows = next(a.shape[axis] for a, axis in inputs if axis is not None)
  return pl.pallas_call(
      functools.partial(kernel, **static),
      grid=(rows // BLOCK_B,),
      in_specs=[spec(a.shape, axis) for a, axis in inputs],
      out_specs=[spec(o.shape, axis) for o, axis in outputs],
      out_shape=[o for o, _ in outputs],
      interpret=interpret, **compiler_params(interpret, num_warps))(*[a for a, _ in inputs])
