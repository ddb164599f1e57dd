"""A free-running LSTM + Dense head as one Pallas kernel: generation without a launch a step.

Shape letters as in `seqjax.model.rollout`: B rollouts, N generated steps, I inputs,
O outputs (O == I: each output is the next input), L layers, H hidden.

`free_run` runs what `rollout.free_run` runs for a per-step `SequenceModel` (the
LSTM stack, then the head's Dense layers on each step's top h, the output fed
back as the next input) with the whole loop inside one kernel: a grid over
batch blocks, each program loading every weight once (while they fit its
registers, else every step: `default_tuning`), keeping each layer's carry and
the fed-back input in registers for all N steps, and writing one output row a
step. The XLA path launches several small kernels per layer per
step instead, so for small models most of its time is launch overhead.

Forward only: `rollout.free_run` calls it outside autodiff and differentiates
the XLA path. Padding as in `tiles`: padded units, features and outputs have
zero weights, so they never reach a real one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from seqjax.model.kernels import tiles
from seqjax.model.numerics import Precision, canonical_precision

Array = jax.Array
# (input_kernel [I_l, 4H], recurrent_kernel [H, 4H], bias [4H]) of each layer, bottom first.
LayerWeights = tuple[Array, Array, Array]
# (kernel [K, N], bias [N]) of each head Dense layer, the output layer last.
DenseWeights = tuple[Array, Array]


def default_tuning(weights: int) -> tiles.Tuning:
  """The tuning for a model of `weights` (padded) parameters: all of them held across the
  loop while they fit `tiles.RESIDENT_FLOATS`, else loaded every step."""
  return tiles.Tuning(num_warps=4, resident=weights <= tiles.RESIDENT_FLOATS)


def _kernel(*refs, num_layers, activations, steps, hp, dtype, precision, tuning):
  """refs: x0 [Bb, Ip], h0 and c0 [L, Bb, Hp], each layer's (input kernel, recurrent
  kernel, bias [1, 4Hp]), each head layer's (kernel, bias [1, Np]), then the outputs
  ys [N, Bb, Op], hT and cT [L, Bb, Hp]."""
  num_head = len(activations)
  x0_ref, h0_ref, c0_ref = refs[:3]
  layer_refs = refs[3:3 + 3 * num_layers]
  head_refs = refs[3 + 3 * num_layers:3 + 3 * num_layers + 2 * num_head]
  ys_ref, hT_ref, cT_ref = refs[3 + 3 * num_layers + 2 * num_head:]

  def load():
    layers = [(tiles.gate_tiles(w_i, hp, dtype), tiles.gate_tiles(w_h, hp, dtype),
               tiles.gate_tiles(b, hp, jnp.float32))
              for w_i, w_h, b in zip(*[iter(layer_refs)] * 3, strict=True)]
    head = [(k[...].astype(dtype), b[...]) for k, b in zip(*[iter(head_refs)] * 2, strict=True)]
    return layers, head

  weights = tiles.held_or_loaded(load, tuning)

  def body(n, state):
    x, hs, cs = state
    layers, head = weights()
    new_hs, new_cs = [], []
    for (w_i, w_h, b), h, c in zip(layers, hs, cs, strict=True):
      z = [tiles.matmul(x, w_i[k], dtype, precision) + b[k]
           + tiles.matmul(h, w_h[k], dtype, precision) for k in range(4)]
      h, c = tiles.lstm_update(z, c)
      new_hs.append(h)
      new_cs.append(c)
      x = h
    for (kernel, bias), act in zip(head, activations, strict=True):
      x = act(tiles.matmul(x, kernel, dtype, precision) + bias)
    ys_ref[n] = x
    return x, tuple(new_hs), tuple(new_cs)

  carry = (x0_ref[...], tuple(h0_ref[layer] for layer in range(num_layers)),
           tuple(c0_ref[layer] for layer in range(num_layers)))
  _, hs, cs = jax.lax.fori_loop(0, steps, body, carry)
  for layer in range(num_layers):
    hT_ref[layer] = hs[layer]
    cT_ref[layer] = cs[layer]


def free_run(layers: Sequence[LayerWeights], head: Sequence[DenseWeights],
             activations: Sequence[Callable[[Array], Array]], carry: tuple[Array, Array],
             first_input: Array, steps: int, *, dtype: Any = jnp.float32,
             precision: Precision = "highest", interpret: bool = False,
             tuning: tiles.Tuning | None = None) -> tuple[tuple[Array, Array], Array]:
  """Generates `steps` outputs of the LSTM + head, each fed back as the next input.

  Args:
    layers: each LSTM layer's weights, bottom first.
    head: each head Dense layer's weights; the last maps H (or the previous
      width) to O == I.
    activations: one elementwise function per head layer, applied after its
      Dense (the identity for "none").
    carry: (h, c), each [L, B, H], float32.
    first_input: the input of the first generated step, [B, I].
    steps: N.
    dtype: the matmul operand dtype (float32 or bfloat16; the carry, gates and
      head outputs stay float32).
    precision: the matmuls' precision.
    interpret: Pallas interpret mode (any backend); False lowers through Triton.
    tuning: how the kernel maps onto a GPU; None takes `default_tuning`.

  Returns:
    (final carry (h, c) each [L, B, H], outputs [N, B, O]).
  """
  num_layers, batch, hidden = carry[0].shape
  features = first_input.shape[-1]
  out_features = head[-1][0].shape[-1]
  if out_features != features:
    raise ValueError(f"free_run: the head's {out_features} outputs must be the next step's "
                     f"{features} inputs")
  hp = tiles.padded(hidden)
  ip = tiles.padded(features)
  f32 = jnp.float32
  operands = [(tiles.pad(first_input.astype(f32), (batch, ip)), 0)]
  operands += [(tiles.pad(a.astype(f32), (num_layers, batch, hp)), 1) for a in carry]
  width = ip
  for w_i, w_h, b in layers:
    operands += [(tiles.pad(tiles.pad_gates(w_i, hidden, hp), (width, 4 * hp)), None),
                 (tiles.pad(tiles.pad_gates(w_h, hidden, hp), (hp, 4 * hp)), None),
                 (tiles.pad_gates(b.astype(f32), hidden, hp)[None], None)]
    width = hp
  for kernel, bias in head:
    out = tiles.padded(kernel.shape[1])
    operands += [(tiles.pad(kernel, (width, out)), None),
                 (tiles.pad(bias.astype(f32)[None], (1, out)), None)]
    width = out
  state = jax.ShapeDtypeStruct((num_layers, batch, hp), f32)
  tuning = tuning or default_tuning(sum(a.size for a, axis in operands if axis is None))
  ys, h, c = tiles.call(
      _kernel, operands,
      [(jax.ShapeDtypeStruct((steps, batch, width), f32), 1), (state, 1), (state, 1)],
      interpret=interpret, num_warps=tuning.num_warps, num_layers=num_layers,
      activations=tuple(activations), steps=steps, hp=hp, dtype=dtype,
      precision=canonical_precision(precision), tuning=tuning)
  return (h[..., :hidden], c[..., :hidden]), ys[..., :out_features]
