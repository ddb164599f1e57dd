"""The LSTM recurrence over time, `lax.scan` with a hand-written backward pass.

Shape letters: T time steps, B batch, H hidden units, G = 4H gates (i, f, g, o).

`scan` runs the recurrence `(h, c) -> (h', c')` on inputs already projected
(`x_t @ W_x + b`, hoisted out of the loop by the caller). Its VJP is written by
hand (`jax.custom_vjp`) because on CPU a scan step costs about as much per
kernel as per flop, and JAX's derived backward pass of the step body is a dozen
small kernels plus a [H, G] weight-gradient matmul and add in every step:

- forward: the step's gates go through one tanh over all G columns
  (`gate_activations`), the step's only other transcendental is tanh(c');
- everything the backward step needs that does not depend on the incoming
  gradients (the gate derivatives, tanh(c'), the previous c) is computed once
  for all T steps after the forward scan, as whole-array ops;
- the backward scan body is then two elementwise kernels and one matmul;
- the recurrent weight gradient is one [H, T*B] x [T*B, G] matmul after the
  backward scan, not T small ones accumulated inside it;
- with a mask, both loops stop at the batch's longest sequence (`scan_active`):
  sequences are padded to the longest of a dataset, and a batch's steps after
  its own longest are padding in every sequence.

Measured on the freq shape (B32 T100 H100, 2-core CPU) by `python -m seqjax.bench`.
The derivation is checked against JAX's autodiff of the same forward scan in
tests/test_recurrence.py (`scan(..., fused=False)` keeps that path).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from seqjax.model import numerics
from seqjax.model.numerics import Precision, canonical_precision

Array = jax.Array
Carry = tuple[Array, Array]


def acc_dtype(dtype: Any) -> Any:
  """Accumulation/carry dtype for a compute dtype: float32, or float64 for float64."""
  return jnp.promote_types(dtype, jnp.float32)


def gate_scale(hidden: int, dtype: Any) -> tuple[Array, Array]:
  """Per-column (scale, shift), each [G], with activation = tanh(z * scale) * scale + shift.

  sigmoid(z) = tanh(z / 2) / 2 + 1/2 on the i, f, o blocks; tanh(z) on the g block.
  """
  half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
  zero = jnp.zeros((hidden,), dtype)
  return jnp.concatenate([half, half, one, half]), jnp.concatenate([half, half, zero, half])


def gate_activations(gates: Array) -> Array:
  """sigmoid on the i, f, o blocks and tanh on the g block of [..., G] pre-activations.

  One vectorised tanh over the contiguous G columns instead of four
  transcendentals over slices, which XLA fuses into one loop (docs/speed.md).
  """
  scale, shift = gate_scale(gates.shape[-1] // 4, gates.dtype)
  return jnp.tanh(gates * scale) * scale + shift


def _matmul(a: Array, w: Array, dtype: Any, precision: Precision) -> Array:
  return jnp.dot(a.astype(dtype), w.astype(dtype), precision=precision,
                 preferred_element_type=acc_dtype(dtype))


def lstm_step(w_h: Array, carry: Carry, gx_t: Array, dtype: Any = jnp.float32,
              precision: Precision = "highest") -> Carry:
  """One LSTM step given the already projected input.

  Args:
    w_h: recurrent kernel [H, G].
    carry: (h, c), each [B, H], float32.
    gx_t: `x_t @ W_x + b` for this step, [B, G], float32 (float64 in x64 tests).
    dtype: dtype of the recurrent matmul (e.g. bfloat16); it accumulates in
      `acc_dtype(dtype)`.
    precision: of the recurrent matmul (see `scan`).

  Returns:
    The new carry (h, c); h is also the step's output.
  """
  h, c = carry
  z = gx_t + _matmul(h, w_h, dtype, precision)
  i, f, g, o = jnp.split(gate_activations(z), 4, axis=-1)
  c = f * c + i * g
  return o * jnp.tanh(c), c


def active_steps(mask: Array) -> Array:
  """The number of steps up to the last one any sequence of the batch has.

  Args:
    mask: [T, B] bool, False where a step is padding.

  Returns:
    An int32 scalar in [0, T]: the steps after it are padding in every sequence.
  """
  if mask.shape[0] == 0:
    return jnp.int32(0)
  any_valid = jnp.any(mask, axis=1)
  last = mask.shape[0] - jnp.argmax(any_valid[::-1])
  return jnp.where(jnp.any(any_valid), last, 0).astype(jnp.int32)


@jax.custom_batching.custom_vmap
def _longest(active: Array) -> Array:
  return active


@_longest.def_vmap
def _longest_vmap(axis_size, in_batched, active):
  # Under vmap (a population, each member with its own batch) every member runs the
  # longest member's steps, padding for the others: a trip count that differs between
  # members would make JAX select the whole loop state, output buffers included, per trip.
  del axis_size
  return (jnp.max(active, axis=0) if in_batched[0] else active), False


def skips_padding(platform: str | None = None) -> bool:
  """Whether the fused path stops at the batch's longest sequence on `platform`
  (default `jax.default_backend()`).

  Measured on CPU. On a GPU a loop of traced length reads its condition back to the
  host at every trip, where a scan's fixed trip count does not; until measured there,
  GPUs and TPUs keep the whole scan.
  """
  return numerics.platform_kind(platform) == "cpu"


def _skip(tree: Any) -> bool:
  # JAX cannot reverse-differentiate a loop of traced length: a second derivative
  # through the fused path (its rules' inputs are then traced) runs the whole scan.
  return skips_padding() and not differentiated(tree)


def scan_active(body, carry, xs, fill, active, unroll, reverse=False):
  """`lax.scan(body, carry, xs, unroll=unroll, reverse=reverse)` over the first `active`
  steps only, for a body that leaves the carry as it is on a step that is padding in
  every sequence and returns `fill` there (a tree of scalars like its outputs).

  A batch of sequences of different lengths is padded to the longest of the dataset,
  not of the batch; the steps past the batch's longest would all be padding, and are
  not run. Blocks of `unroll` steps run in a loop of `ceil(active / unroll)` trips; the
  last `T % unroll` steps, too few for a block, always run (padded: carried through).
  Under `vmap` every member runs as many steps as the one with the most.

  Args:
    body, carry, unroll, reverse: as `lax.scan`'s.
    xs: a tree of [T, ...] arrays.
    fill: a tree of scalars, the outputs of a step that is not run.
    active: int32 scalar in [0, T] (`active_steps`); the steps from it on are not run.

  Returns:
    (final carry, outputs [T, ...]), those of `lax.scan`.
  """
  steps = jax.tree.leaves(xs)[0].shape[0]
  whole = type(unroll) in (bool, jnp.bool_) and unroll  # lax.scan's unroll=True
  size = steps if whole else max(1, min(int(unroll), steps))
  if size >= steps:
    return jax.lax.scan(body, carry, xs, unroll=unroll, reverse=reverse)
  full = steps // size * size
  active = _longest(active)
  blocks = jnp.minimum((active + size - 1) // size, full // size)
  shapes = jax.eval_shape(body, carry, jax.tree.map(lambda a: a[0], xs))[1]
  ys = jax.tree.map(lambda s, v: jnp.full((steps, *s.shape), v, s.dtype), shapes, fill)

  def block(i, state):
    carry, ys = state
    start = (blocks - 1 - i if reverse else i) * size
    part = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), xs)
    carry, out = jax.lax.scan(body, carry, part, unroll=size, reverse=reverse)
    ys = jax.tree.map(lambda y, o: jax.lax.dynamic_update_slice_in_dim(y, o, start, 0), ys, out)
    return carry, ys

  def tail(carry, ys):
    if full == steps:
      return carry, ys
    carry, out = jax.lax.scan(body, carry, jax.tree.map(lambda a: a[full:], xs),
                              unroll=steps - full, reverse=reverse)
    return carry, jax.tree.map(lambda y, o: y.at[full:].set(o), ys, out)

  if reverse:
    carry, ys = tail(carry, ys)
  carry, ys = jax.lax.fori_loop(0, blocks, block, (carry, ys))
  if not reverse:
    carry, ys = tail(carry, ys)
  return carry, ys


def _forward(w_h, gx, carry, mask, h_mask, unroll, dtype, precision, keep, skip=False):
  """The forward scan.

  With `keep`, each step also returns what its backward step needs and that
  does not depend on the incoming gradients, computed here while the step's
  values are in cache: `p` [B, G], `k` and `f` [B, H] with
  dz = [dc, dc, dc, dh] * p, dc += dh * k and dc_prev = dc * f (see `_fused_bwd`);
  and, with a mask, the carried h (the output is 0 on padded steps).
  `h_mask` [B, H] (recurrent dropout) multiplies h before the recurrent matmul.
  `skip`, with a mask, skips the steps after the batch's longest sequence
  (`scan_active`): JAX cannot differentiate that loop, so only the hand-written VJP
  asks for it. Their kept h is 0, not the carry: it is the h_prev of the next step,
  padding too, whose dz is 0, so it meets only zeros in the weight gradient.
  """
  scale, shift = gate_scale(w_h.shape[0], gx.dtype)

  def body(carry, xs):
    gx_t, m_t = xs if mask is not None else (xs, None)
    h, c_prev = carry
    h_in = h if h_mask is None else h * h_mask
    t = jnp.tanh((gx_t + _matmul(h_in, w_h, dtype, precision)) * scale)
    i, f, g, o = jnp.split(t * scale + shift, 4, axis=-1)
    c = f * c_prev + i * g
    tc = jnp.tanh(c)
    new = (o * tc, c)
    out = new[0]
    if m_t is not None:  # padding: keep the carry, output 0
      m = m_t[:, None]
      new = tuple(jnp.where(m, n, old) for n, old in zip(new, carry, strict=True))
      out = jnp.where(m, out, 0.0)
    if not keep:
      return new, out
    p = jnp.concatenate([g, c_prev, i, tc], axis=-1) * (scale * scale) * (1 - t * t)
    k = o * (1 - tc * tc)
    if m_t is None:
      return new, (out, p, k, f)
    # padded steps pass the gradients through
    return new, (out, new[0], jnp.where(m, p, 0.0), jnp.where(m, k, 0.0), jnp.where(m, f, 1.0))

  xs = gx if mask is None else (gx, mask)
  if mask is None or not skip:
    return jax.lax.scan(body, carry, xs, unroll=unroll)
  fill = (0.0, 0.0, 0.0, 0.0, 1.0) if keep else 0.0  # out, h, p, k, f of a padded step
  return scan_active(body, carry, xs, fill, active_steps(mask), unroll)


def forward_mode(tree: Any) -> bool:
  """True when forward-mode differentiation (`jax.jvp`, `jax.jacfwd`) is the innermost
  transformation of a leaf of `tree`, seen through `vmap`; False under reverse mode
  (`jax.grad`, `jax.vjp`: their tracers are JAX's linearize tracers) and under `jit`.

  Tracer classes are read by name: JAX exports them only from private modules.
  """
  return "JVPTracer" in _tracer_names(tree)


def differentiated(tree: Any) -> bool:
  """True when a leaf of `tree` is being differentiated, forward or reverse (seen
  through `vmap`): inside a custom VJP's own rules, a second derivative."""
  return not {"JVPTracer", "LinearizeTracer"}.isdisjoint(_tracer_names(tree))


def _tracer_names(tree: Any) -> set[str]:
  names = set()
  for x in jax.tree.leaves(tree):
    while type(x).__name__ == "BatchTracer":
      x = x.val
    names.add(type(x).__name__)
  return names


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _fused(w_h, gx, carry, mask, h_mask, unroll, dtype, precision):
  return _forward(w_h, gx, carry, mask, h_mask, unroll, dtype, precision, keep=False,
                  skip=_skip((w_h, gx, carry, h_mask)))


def _fused_fwd(w_h, gx, carry, mask, h_mask, unroll, dtype, precision):
  final, kept = _forward(w_h, gx, carry, mask, h_mask, unroll, dtype, precision, keep=True,
                         skip=_skip((w_h, gx, carry, h_mask)))
  if mask is None:
    outs, p, k, f = kept
    hs = outs
  else:
    outs, hs, p, k, f = kept
  h_prev = jnp.concatenate([carry[0][None], hs[:-1]])
  if h_mask is not None:  # what the recurrent matmul saw
    h_prev = h_prev * h_mask
  return (final, outs), (w_h, h_prev, p, k, f, mask, h_mask)


def _fused_bwd(unroll, dtype, precision, residuals, cotangents):
  w_h, h_prev, p, k, f, mask, h_mask = residuals
  (dh_final, dc_final), douts = cotangents
  if mask is not None:
    douts = jnp.where(mask[..., None], douts, 0.0)

  def body(carry, xs):
    dh, dc = carry
    p_t, k_t, f_t, dout_t, m_t = xs if mask is not None else (*xs, None)
    dh = dh + dout_t
    dc = dc + dh * k_t
    dz = jnp.concatenate([dc, dc, dc, dh], axis=-1) * p_t  # [B, G]
    # dz @ W_h^T, contracting W_h's G axis in place (faster than a transposed copy on CPU)
    dh_prev = jax.lax.dot_general(dz.astype(dtype), w_h.astype(dtype), (((1,), (1,)), ((), ())),
                                  precision=precision,
                                  preferred_element_type=acc_dtype(dtype)).astype(dh.dtype)
    if h_mask is not None:
      dh_prev = dh_prev * h_mask
    if m_t is not None:
      dh_prev = jnp.where(m_t[:, None], dh_prev, dh)
    return (dh_prev, dc * f_t), dz

  xs = (p, k, f, douts) if mask is None else (p, k, f, douts, mask)
  if mask is not None and _skip((residuals, cotangents)):  # padding: dh, dc through, dz 0
    (dh0, dc0), dz = scan_active(body, (dh_final, dc_final), xs, 0.0, active_steps(mask),
                                  unroll, reverse=True)
  else:
    (dh0, dc0), dz = jax.lax.scan(body, (dh_final, dc_final), xs, reverse=True, unroll=unroll)
  # All steps' weight gradients as one matmul: [H, T*B] x [T*B, G].
  dw = jax.lax.dot_general(h_prev.astype(dtype), dz.astype(dtype), (((0, 1), (0, 1)), ((), ())),
                           precision=precision, preferred_element_type=acc_dtype(dtype))
  return dw.astype(w_h.dtype), dz.astype(p.dtype), (dh0, dc0), None, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def scan(w_h: Array, gx: Array, carry: Carry, mask: Array | None = None,
         h_mask: Array | None = None, *, unroll: int | bool = 1, dtype: Any = jnp.float32,
         precision: Precision = "highest", fused: bool = True) -> tuple[Carry, Array]:
  """Runs the recurrence over time on projected inputs.

  Args:
    w_h: recurrent kernel [H, G].
    gx: projected inputs, time-major [T, B, G].
    carry: (h, c), each [B, H].
    mask: [T, B] bool, False where a step is padding (carry kept, output 0),
      or None when every step is valid.
    h_mask: [B, H] multiplier of h before the recurrent matmul, the same at
      every step (recurrent dropout's per-sequence mask), or None. A constant:
      no derivative flows into it.
    unroll: `lax.scan` unroll (of the forward and the backward scan).
    dtype: recurrent matmul dtype; the carry and gate math stay float32.
    precision: of every matmul, forward and backward: "highest" is float32
      arithmetic on every backend; "default" lets the backend round float32
      operands (TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPU); None
      follows JAX's `jax_default_matmul_precision`.
    fused: use the hand-written VJP; False differentiates the scan with JAX's
      autodiff (the reference the tests compare against). Under forward-mode
      differentiation (`jax.jvp`, `jax.jacfwd`), which a custom VJP cannot
      serve, the fused path steps aside by itself when it sees the forward
      trace; a staged program between the transform and the scan (`jit`,
      `checkpoint`, `lax.scan`, `jax.linearize`) hides it: set fused=False.

  Returns:
    (final carry, outputs [T, B, H]); outputs are 0 on padded steps.
  """
  precision = canonical_precision(precision)
  if h_mask is not None:
    h_mask = jax.lax.stop_gradient(h_mask)
  if fused and not forward_mode((w_h, gx, carry, h_mask)):
    return _fused(w_h, gx, carry, mask, h_mask, unroll, dtype, precision)
  return _forward(w_h, gx, carry, mask, h_mask, unroll, dtype, precision, keep=False)
