"""One LSTM layer's whole recurrence as Pallas kernels: the time loop inside the kernel.

Shape letters as in `seqjax.model.recurrence`: T time, B batch, H hidden, G = 4H gates
(i, f, g, o). `scan` has `recurrence.scan`'s contract (projected inputs in,
final carry and outputs out, the same masks) and its own `jax.custom_vjp`:

- forward: a grid over batch blocks; each program runs all T steps in a
  `fori_loop`, the recurrent kernel W_h loaded once (or, for large H, every
  step: `Tuning`), the carry in registers; the hoisted input projection
  [T, B, G] streams in a step at a time, a step ahead of its use; it
  writes the outputs, the final carry and, only when a gradient is taken (the
  `custom_vjp` forward), the carried h and c of every step for the backward;
- backward: a reverse-time kernel of the same shape recomputes each step's
  gates from the stored carries (one [B, H] x [H, G] matmul) and writes the
  gate gradients dz [T, B, G]; the recurrent weight gradient is then one
  [H, T*B] x [T*B, G] matmul outside the kernel, as in `recurrence`.

Each gate's block is a separate [B, H] tile (the Triton lowering has no value
slicing), H is padded to a power of two >= 16 and B to the batch block (Triton
tiles; `dot` needs 16 rows). Padded units have zero weights and stay zero;
padded batch rows are sliced off. Under a mesh that splits the batch, each
device runs the kernels on its own rows (`tiles.call`).

On GPUs the kernels lower through Triton (`jax.experimental.pallas.triton`);
elsewhere they run in Pallas' interpret mode (`interpret=True`), which is how
the tests check them against the XLA path on a CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from seqjax.model.kernels import tiles
from seqjax.model.numerics import Precision, canonical_precision

Array = jax.Array
Carry = tuple[Array, Array]
Tuning = tiles.Tuning


def default_tuning(hp: int) -> Tuning:
  """The tuning for a padded H: W_h's four [Hp, Hp] gate tiles held while they fit
  `tiles.RESIDENT_FLOATS` (Hp <= 64), and 8 warps once a [16, Hp] tile is large
  enough to keep them busy."""
  return Tuning(num_warps=4 if hp <= 64 else 8, resident=4 * hp * hp <= tiles.RESIDENT_FLOATS)


def _gx(gx_ref, t, hp):
  return [gx_ref[t, :, pl.ds(k * hp, hp)] for k in range(4)]


def _forward_kernel(gx_ref, w_ref, h0_ref, c0_ref, m_ref, hm_ref, ys_ref, hT_ref, cT_ref,
                    *kept_refs, steps, hp, dtype, precision, tuning):
  """Writes the outputs and final carry; with `kept_refs` = (hs, cs), also every step's
  carry for the backward pass (a gradient needs them; inference does not).

  Step t+1's inputs (gx, mask) are loaded at the start of step t, ahead of the
  carry's dependency chain, so their memory latency overlaps step t's math.
  """
  weights = tiles.held_or_loaded(lambda: tiles.gate_tiles(w_ref, hp, dtype), tuning)
  hm = hm_ref[...]

  def body(t, carry):
    h, c, gx, m = carry
    nxt = jnp.minimum(t + 1, steps - 1)
    gx_next, m_next = _gx(gx_ref, nxt, hp), m_ref[nxt]
    ws = weights()
    z = [gx[k] + tiles.matmul(h * hm, ws[k], dtype, precision) for k in range(4)]
    h_new, c_new = tiles.lstm_update(z, c)
    valid = m > 0  # [Bb, 1]: False on padding, where the carry is kept
    h, c = jnp.where(valid, h_new, h), jnp.where(valid, c_new, c)
    ys_ref[t] = jnp.where(valid, h_new, 0.0)
    if kept_refs:
      kept_refs[0][t] = h
      kept_refs[1][t] = c
    return h, c, gx_next, m_next

  h, c, _, _ = jax.lax.fori_loop(
      0, steps, body, (h0_ref[...], c0_ref[...], _gx(gx_ref, 0, hp), m_ref[0]))
  hT_ref[...] = h
  cT_ref[...] = c


def _backward_kernel(gx_ref, w_ref, h0_ref, c0_ref, m_ref, hm_ref, hs_ref, cs_ref, dys_ref,
                     dhT_ref, dcT_ref, dz_ref, dh0_ref, dc0_ref, *, steps, hp, dtype,
                     precision, tuning):
  """Reverse time: step t's stored inputs (gx, the carry before it, the mask, the output
  gradient) are loaded during step t+1, as in the forward."""
  weights = tiles.held_or_loaded(lambda: tiles.gate_tiles(w_ref, hp, dtype), tuning)
  hm = hm_ref[...]
  h0, c0 = h0_ref[...], c0_ref[...]

  def load(t):
    prev, first = jnp.maximum(t - 1, 0), t == 0
    return (_gx(gx_ref, t, hp), jnp.where(first, h0, hs_ref[prev]),
            jnp.where(first, c0, cs_ref[prev]), m_ref[t], dys_ref[t])

  def body(s, carry):
    dh, dc, (gx, h_prev, c_prev, m, dy) = carry
    t = steps - 1 - s
    loaded = load(jnp.maximum(t - 1, 0))
    ws = weights()
    h_in = h_prev * hm
    z = [gx[k] + tiles.matmul(h_in, ws[k], dtype, precision) for k in range(4)]
    i, f, g, o = tiles.gates(z)
    tc = jnp.tanh(f * c_prev + i * g)
    valid = m > 0
    dh_t = dh + jnp.where(valid, dy, 0.0)
    dc_t = dc + dh_t * o * (1 - tc * tc)
    dz = [dc_t * g * i * (1 - i), dc_t * c_prev * f * (1 - f), dc_t * i * (1 - g * g),
          dh_t * tc * o * (1 - o)]
    dz = [jnp.where(valid, d, 0.0) for d in dz]
    dh_prev = sum(jax.lax.dot_general(d.astype(dtype), w, (((1,), (1,)), ((), ())),
                                      precision=precision,
                                      preferred_element_type=jnp.float32)
                  for d, w in zip(dz, ws, strict=True)) * hm
    for k in range(4):
      dz_ref[t, :, pl.ds(k * hp, hp)] = dz[k]
    return jnp.where(valid, dh_prev, dh_t), jnp.where(valid, dc_t * f, dc), loaded

  dh, dc, _ = jax.lax.fori_loop(0, steps, body,
                                (dhT_ref[...], dcT_ref[...], load(steps - 1)))
  dh0_ref[...] = dh
  dc0_ref[...] = dc


def _prepare(w_h, gx, carry, mask, h_mask):
  """The kernel operands, padded in H (`tiles.call` pads the batch), and (T, B, H, Hp)."""
  steps, batch, g = gx.shape
  hidden = g // 4
  hp = tiles.padded(hidden)
  gx_p = tiles.pad_gates(gx.astype(jnp.float32), hidden, hp)
  w_p = tiles.pad(tiles.pad_gates(w_h, hidden, hp), (hp, 4 * hp))
  h0, c0 = (tiles.pad_last(a.astype(jnp.float32), hp) for a in carry)
  m = jnp.ones((steps, batch), jnp.float32) if mask is None else mask.astype(jnp.float32)
  m = m[..., None]  # [T, B, 1]; padded batch rows get 0
  hm = jnp.ones((batch, hidden), jnp.float32) if h_mask is None else h_mask.astype(jnp.float32)
  return (gx_p, w_p, h0, c0, m, tiles.pad_last(hm, hp)), (steps, batch, hidden, hp)


def _forward(w_h, gx, carry, mask, h_mask, dtype, precision, interpret, tuning, keep):
  """((final carry, outputs), residuals); the residuals (with every step's carry) only
  when `keep`."""
  (gx_p, w_p, h0, c0, m, hm), (steps, batch, hidden, hp) = _prepare(
      w_h, gx, carry, mask, h_mask)
  seq = jax.ShapeDtypeStruct((steps, batch, hp), jnp.float32)
  step = jax.ShapeDtypeStruct((batch, hp), jnp.float32)
  ys, h, c, *kept = tiles.call(
      _forward_kernel, [(gx_p, 1), (w_p, None), (h0, 0), (c0, 0), (m, 1), (hm, 0)],
      [(seq, 1), (step, 0), (step, 0)] + [(seq, 1), (seq, 1)] * keep,
      interpret=interpret, num_warps=tuning.num_warps, steps=steps, hp=hp, dtype=dtype,
      precision=precision, tuning=tuning)
  out = ((h[:, :hidden], c[:, :hidden]), ys[..., :hidden])
  return out, ((gx_p, w_p, h0, c0, m, hm, *kept) if keep else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _scan(w_h, gx, carry, mask, h_mask, dtype, precision, interpret, tuning):
  return _forward(w_h, gx, carry, mask, h_mask, dtype, precision, interpret, tuning,
                  keep=False)[0]


def _scan_fwd(w_h, gx, carry, mask, h_mask, dtype, precision, interpret, tuning):
  out, kept = _forward(w_h, gx, carry, mask, h_mask, dtype, precision, interpret, tuning,
                       keep=True)
  return out, (kept, w_h, mask, h_mask)


def _scan_bwd(dtype, precision, interpret, tuning, residuals, cotangents):
  (gx_p, w_p, h0, c0, m, hm, hs, cs), w_h, mask, h_mask = residuals
  (dh_final, dc_final), douts = cotangents
  steps, batch, hp = hs.shape
  hidden = w_h.shape[0]
  pad_h = lambda a: tiles.pad_last(a.astype(jnp.float32), hp)  # noqa: E731
  step = jax.ShapeDtypeStruct((batch, hp), jnp.float32)
  dz, dh0, dc0 = tiles.call(
      _backward_kernel,
      [(gx_p, 1), (w_p, None), (h0, 0), (c0, 0), (m, 1), (hm, 0), (hs, 1), (cs, 1),
       (pad_h(douts), 1), (pad_h(dh_final), 0), (pad_h(dc_final), 0)],
      [(jax.ShapeDtypeStruct((steps, batch, 4 * hp), jnp.float32), 1), (step, 0), (step, 0)],
      interpret=interpret, num_warps=tuning.num_warps, steps=steps, hp=hp, dtype=dtype,
      precision=precision, tuning=tuning)
  dz = dz.reshape(steps, batch, 4, hp)[..., :hidden].reshape(steps, batch, 4 * hidden)
  h_prev = jnp.concatenate([h0[None], hs[:-1]])[..., :hidden]
  if h_mask is not None:
    h_prev = h_prev * h_mask
  # All steps' weight gradients as one matmul: [H, T*B] x [T*B, G].
  dw = jax.lax.dot_general(h_prev.astype(dtype), dz.astype(dtype), (((0, 1), (0, 1)), ((), ())),
                           precision=precision, preferred_element_type=jnp.float32)
  return (dw.astype(w_h.dtype), dz, (dh0[:, :hidden], dc0[:, :hidden]), None, None)


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan(w_h: Array, gx: Array, carry: Carry, mask: Array | None = None,
         h_mask: Array | None = None, *, dtype: Any = jnp.float32,
         precision: Precision = "highest", interpret: bool = False,
         tuning: Tuning | None = None) -> tuple[Carry, Array]:
  """`recurrence.scan` as Pallas kernels (see the module docstring).

  Args:
    w_h, gx, carry, mask, h_mask, dtype, precision: as `recurrence.scan`
      (float32 or bfloat16 matmuls; the carry and gate math stay float32).
    interpret: run the kernels in Pallas' interpret mode (any backend);
      False lowers them through Triton (NVIDIA GPUs).
    tuning: how the kernels map onto a GPU; None takes `default_tuning`.

  Returns:
    (final carry, outputs [T, B, H]); outputs are 0 on padded steps.
  """
  if h_mask is not None:
    h_mask = jax.lax.stop_gradient(h_mask)
  tuning = tuning or default_tuning(tiles.padded(w_h.shape[0]))
  return _scan(w_h, gx, carry, mask, h_mask, dtype, canonical_precision(precision), interpret,
               tuning)
