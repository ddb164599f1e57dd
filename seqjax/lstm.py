"""A hand-written LSTM (Flax linen) run under `jax.lax.scan`.

Shape letters used in this module:
  B  batch                 T  time steps
  I  input features        H  hidden units per layer
  G  gates, G = 4H, ordered i, f, g, o (PyTorch and Keras order)
  L  stacked layers

Carry convention: a carry is the pair `(h, c)`. For one layer each is [B, H];
for the stacked `LSTM` each is [L, B, H], the layout of `torch.nn.LSTM`'s
`(h_n, c_n)`. The carry is always returned to the caller, so stateful use
(rollout, streaming chunks) is the caller passing it back in.

Everything that does not depend on the carry is computed for the whole
sequence before the scan: the input projection `x @ W_x + b` is one matmul,
and the scan body is only `h @ W_h` (one fused [H, G] matmul) plus gate math.
The carry and the gate non-linearities stay in float32 whatever `dtype` the
matmuls use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import flip_sequences

from seqjax import numerics, recurrence
from seqjax.numerics import Precision, canonical_precision
from seqjax.recurrence import acc_dtype, lstm_step

Array = jax.Array
Carry = tuple[Array, Array]
Initializer = Callable[..., Array]

# Names accepted by `initializer()`, i.e. by the configs.
INITIALIZERS = ("glorot_uniform", "glorot_normal", "lecun_normal", "he_normal", "orthogonal",
                "normal", "uniform", "zeros")


def initializer(name: str, gain: float = 1.0) -> Initializer:
  """Returns a Keras-named initializer; `gain` scales it (orthogonal's `gain`).

  Args:
    name: one of `INITIALIZERS`.
    gain: multiplies the initializer's output; for "normal" it is the stddev
      and for "uniform" the half-width, as in Keras' RandomNormal/RandomUniform.
  """
  inits = nn.initializers
  table = {
      "glorot_uniform": lambda: inits.variance_scaling(gain**2, "fan_avg", "uniform"),
      "glorot_normal": lambda: inits.variance_scaling(gain**2, "fan_avg", "truncated_normal"),
      "lecun_normal": lambda: inits.variance_scaling(gain**2, "fan_in", "truncated_normal"),
      "he_normal": lambda: inits.variance_scaling(2 * gain**2, "fan_in", "truncated_normal"),
      "orthogonal": lambda: inits.orthogonal(scale=gain),
      "normal": lambda: inits.normal(stddev=gain),
      "uniform": lambda: _uniform(gain),
      "zeros": lambda: inits.zeros,
  }
  if name not in table:
    raise ValueError(f"initializer: unknown name {name!r}; allowed: {', '.join(INITIALIZERS)}")
  return table[name]()


def _uniform(limit: float) -> Initializer:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


def per_gate(init: Initializer) -> Initializer:
  """Applies `init` to each of the four [.., H] gate blocks of a [.., G] kernel.

  An orthogonal recurrent kernel is then orthogonal per gate ([H, H] blocks),
  as in Flax's and PyTorch-style initialisations, rather than across all gates.
  """
  def init_fn(key, shape, dtype=jnp.float32):
    *lead, g = shape
    keys = jax.random.split(key, 4)
    return jnp.concatenate([init(k, (*lead, g // 4), dtype) for k in keys], axis=-1)
  return init_fn


class CellOptions(nn.Module, kw_only=True):
  """The options of one LSTM cell, declared once for every module that builds cells.

  `LSTMCell`, `LSTMLayer`, `LSTM` and `models.SequenceModel` inherit these
  fields (keyword-only) and pass them down by keyword (`options_of`).

  Attributes:
    kernel_init: input kernel initializer, applied to [I, G] (Keras default).
    recurrent_init: recurrent kernel initializer, applied per gate to [H, H].
    bias_init: bias initializer for [G].
    forget_bias: added to the forget-gate bias at init (Keras
      `unit_forget_bias=True` is 1.0; 0.0 turns it off).
    chrono_tmax: > 0 replaces `forget_bias` by the chrono initialisation
      (Tallec & Ollivier, 2018): b_f ~ log(U(1, tmax - 1)), b_i = -b_f, so the
      units' memory timescales spread up to `tmax` steps.
    dtype: matmul compute dtype; the carry and gate math stay float32.
    param_dtype: parameter dtype.
    precision: matmul precision of the input projection and the recurrent
      matmul (see `recurrence.scan`): "highest" (float32 arithmetic on every
      backend), "high", "default" (TF32 on recent NVIDIA GPUs, one bfloat16
      pass on TPU), or None (JAX's `jax_default_matmul_precision`).
  """
  kernel_init: Initializer = nn.initializers.glorot_uniform()
  recurrent_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros
  forget_bias: float = 1.0
  chrono_tmax: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Precision = "highest"


class LSTMOptions(CellOptions, kw_only=True):
  """`CellOptions` plus how a layer runs the cell over time.

  Attributes:
    reverse: process time from last to first valid step; outputs stay aligned
      with the input positions (PyTorch's backward direction).
    unroll: `lax.scan` unroll factor; 0 chooses it by shape and platform
      (`auto_unroll`).
    remat: checkpointed chunk length for long sequences (see `scan_layer`);
      0 off, -1 chosen by shape (`auto_remat`).
    fused: the hand-written VJP of `recurrence.scan` (fast); False lets JAX
      differentiate the scan, which forward-mode AD (`jax.jvp`, `jacfwd`) needs.
  """
  reverse: bool = False
  unroll: int | bool = 1
  remat: int = 0
  fused: bool = True


def options_of(module: nn.Module, kind: type[nn.Module] = LSTMOptions) -> dict[str, Any]:
  """The values of `kind`'s option fields on `module`, as keyword arguments."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(kind)
          if f.name not in ("parent", "name")}


class LSTMCell(CellOptions):
  """The LSTM cell: parameters and one step, `(carry, x_t) -> (carry, h_t)`.

  Attributes:
    hidden: H.
    in_features: I (the layer passes `x.shape[-1]`).
    and the `CellOptions`, by keyword.
  """
  hidden: int
  in_features: int

  def setup(self):
    g = 4 * self.hidden
    self.input_kernel = self.param("input_kernel", self.kernel_init,
                                   (self.in_features, g), self.param_dtype)
    self.recurrent_kernel = self.param("recurrent_kernel", per_gate(self.recurrent_init),
                                       (self.hidden, g), self.param_dtype)

    def bias_init(key, shape, dtype):
      h = self.hidden
      key, chrono_key = jax.random.split(key)
      extra = jnp.zeros(shape, dtype).at[h:2 * h].set(self.forget_bias)
      if self.chrono_tmax > 0:
        b_f = jnp.log(jax.random.uniform(chrono_key, (h,), dtype, 1.0,
                                         max(self.chrono_tmax - 1.0, 1.0)))
        extra = jnp.zeros(shape, dtype).at[:h].set(-b_f).at[h:2 * h].set(b_f)
      return self.bias_init(key, shape, dtype) + extra

    self.bias = self.param("bias", bias_init, (g,), self.param_dtype)

  def project(self, x: Array) -> Array:
    """`x @ W_x + b` for any leading shape: [..., I] -> [..., G] (float32)."""
    acc = acc_dtype(self.dtype)
    gx = jnp.dot(x.astype(self.dtype), self.input_kernel.astype(self.dtype),
                 precision=canonical_precision(self.precision),
                 preferred_element_type=acc)
    return gx + self.bias.astype(acc)

  def __call__(self, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
    """One step on raw input x_t [B, I]; returns ((h, c), h), each [B, H]."""
    carry = lstm_step(self.recurrent_kernel, carry, self.project(x_t), self.dtype,
                      canonical_precision(self.precision))
    return carry, carry[0]

  def initialize_carry(self, batch_shape: tuple[int, ...]) -> Carry:
    return zero_carry(batch_shape, self.hidden, acc_dtype(self.dtype))


def zero_carry(batch_shape: tuple[int, ...], hidden: int, dtype: Any = jnp.float32) -> Carry:
  """The zero carry (h, c), each [*batch_shape, H] (two buffers, so both can be donated)."""
  shape = (*batch_shape, hidden)
  return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


# The `lax.scan` unroll by platform and per-step work B*H: rows (largest B*H, unroll),
# the first that fits wins. Each scan iteration costs a loop overhead (CPU) or a few
# kernel launches (GPU); unrolling amortises it, at the price of compile time and
# code size, and small per-step work gains the most. Measured with
# `python -m seqjax.bench --unroll=1,4,8,16,32,64,128` (README, "Scan unroll on a GPU"):
# - cpu, 2-core x86: unroll 8 makes mean (B1 H10) 2.7x faster and slows freq (B32 H100);
# - gpu, H200: mean B1 T2000 H10 takes 10.5 ms at 32 (best), 12.4 at 128, 14.3 at 16,
#   34.1 at 1 and 299.8 ms at 8, so no GPU row may choose 8. Larger B*H rows are not
#   yet measured on a GPU: they keep 16 and 4 until the bench says otherwise;
# - tpu: not measured; 16 and 4, as before the GPU figures.
UNROLL_TABLE = {
    "cpu": ((256, 8), (None, 1)),
    "gpu": ((256, 32), (65536, 16), (None, 4)),
    "tpu": ((65536, 16), (None, 4)),
}


def auto_unroll(steps: int, batch: int, hidden: int, platform: str | None = None) -> int:
  """The `lax.scan` unroll for a shape and platform, from `UNROLL_TABLE`, at most `steps`.

  `platform`: "cpu", "gpu" ("cuda", "rocm"), "tpu"; others take the TPU rows.
  """
  rows = UNROLL_TABLE.get(numerics.platform_kind(platform), UNROLL_TABLE["tpu"])
  work = batch * hidden
  unroll = next(u for limit, u in rows if limit is None or work <= limit)
  return max(1, min(unroll, steps))


# Bytes the per-step residuals of one layer's backward pass may take before
# `auto_remat` recomputes them instead: `recurrence.scan` keeps 7 [B, H] float32
# arrays a step (the [B, 4H] gate factors, two [B, H] factors, the previous h).
REMAT_BUDGET = 2 * 2**30
RESIDUALS_PER_STEP = 7


def auto_remat(steps: int, batch: int, hidden: int) -> int:
  """Remat chunk length for a shape: 0 (store everything) unless it would exceed
  `REMAT_BUDGET`, then about sqrt(T) steps per chunk (memory O(sqrt T) steps)."""
  if steps * batch * hidden * 4 * RESIDUALS_PER_STEP <= REMAT_BUDGET:
    return 0
  return max(1, int(round(steps ** 0.5)))


def scan_layer(w_h: Array, gx: Array, carry: Carry, mask: Array | None, *,
               unroll: int | bool = 1, dtype: Any = jnp.float32,
               precision: Precision = "highest", remat: int = 0, fused: bool = True
               ) -> tuple[Carry, Array]:
  """Runs the recurrence over time on projected inputs (`recurrence.scan`), in remat chunks.

  Args:
    w_h, gx, carry, mask, unroll, dtype, precision: see `recurrence.scan` (gx
      is [T, B, G]).
    remat: > 0 runs the scan in chunks of `remat` steps under `jax.checkpoint`:
      the backward pass keeps only the carries between chunks and recomputes
      a chunk's gates when it reaches it, so a long sequence needs memory for
      T/remat + remat steps instead of T (at the cost of a second forward).
    fused: the hand-written VJP (`recurrence.scan`); False uses JAX's autodiff.

  Returns:
    (final carry, outputs [T, B, H]).
  """
  def run(carry, xs):
    gx, mask = xs
    return recurrence.scan(w_h, gx, carry, mask, unroll=unroll, dtype=dtype,
                           precision=precision, fused=fused)

  xs = (gx, mask)
  steps = gx.shape[0]
  if not remat or remat >= steps:
    return run(carry, xs)
  chunks, done = steps // remat, steps // remat * remat
  head = jax.tree.map(lambda a: a[:done].reshape(chunks, remat, *a.shape[1:]), xs)
  carry, ys = jax.lax.scan(jax.checkpoint(run, prevent_cse=False), carry, head)
  ys = ys.reshape(done, *ys.shape[2:])
  if done < steps:
    carry, tail = run(carry, jax.tree.map(lambda a: a[done:], xs))
    ys = jnp.concatenate([ys, tail])
  return carry, ys


class LSTMLayer(LSTMOptions):
  """One LSTM layer over a sequence: [B, T, I] -> [B, T, H].

  Attributes:
    hidden: H.
    and the `LSTMOptions`, by keyword.
  """
  hidden: int

  @nn.compact
  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None) -> tuple[Carry, Array]:
    """Runs the layer.

    Args:
      x: inputs [B, T, I].
      carry: initial (h, c), each [B, H]; zeros when None.
      lengths: valid steps per sequence [B] (right padding), or None.
      mask: [B, T] bool, steps to run anywhere in the sequence (Keras
        `Masking`); skipped steps keep the carry and output 0. At most one of
        `lengths` and `mask`.

    Returns:
      (final carry, outputs [B, T, H]); outputs are 0 on padded/masked steps.
    """
    if lengths is not None and mask is not None:
      raise ValueError("LSTMLayer: pass lengths or mask, not both")
    check_options("LSTMLayer", self.hidden, 1, self.remat, self.unroll)
    batch, steps, in_features = check_input("LSTMLayer", x)
    if carry is not None:
      check_carry("LSTMLayer", carry, (batch, self.hidden), "[batch, hidden]")
    lengths = check_lengths("LSTMLayer", lengths, batch, steps)
    if mask is not None and jnp.shape(mask) != (batch, steps):
      raise ValueError(f"LSTMLayer: mask must be [batch, time] = {(batch, steps)}; "
                       f"got shape {jnp.shape(mask)}")
    cell = LSTMCell(self.hidden, in_features, **options_of(self, CellOptions), name="cell")
    if carry is None:
      carry = zero_carry((batch,), self.hidden, acc_dtype(self.dtype))
    if lengths is not None:
      mask = jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]  # [B, T]

    def flip(a):  # reverse each sequence within its valid length
      return flip_sequences(a, lengths, num_batch_dims=1, time_major=False) if self.reverse else a

    # One matmul for all steps, time-major from the start: transposing x [B, T, I]
    # is cheaper than transposing its projection [B, T, G] (and its gradient).
    gx = cell.project(jnp.swapaxes(flip(x), 0, 1))  # [T, B, G]
    if mask is not None:
      mask = jnp.swapaxes(flip(mask), 0, 1)  # [T, B]
    unroll = self.unroll or auto_unroll(steps, batch, self.hidden)
    remat = auto_remat(steps, batch, self.hidden) if self.remat == -1 else self.remat
    carry, ys = scan_layer(cell.recurrent_kernel, gx, carry, mask,
                           unroll=unroll, dtype=self.dtype, precision=self.precision,
                           remat=remat, fused=self.fused)
    return carry, flip(jnp.swapaxes(ys, 0, 1))


class LSTM(LSTMOptions):
  """Stacked LSTM, the `torch.nn.LSTM(batch_first=True)` / Keras `LSTM` equivalent.

  Attributes:
    hidden: H, the same for every layer.
    num_layers: L.
    return_sequences: outputs [B, T, H] of the top layer if True, else its
      last valid output [B, H] (the top layer's final h).
    and the `LSTMOptions` (reverse, unroll, remat, initializers, ...), by keyword.
  """
  hidden: int
  num_layers: int = 1
  return_sequences: bool = True

  @nn.compact
  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None) -> tuple[Carry, Array]:
    """Runs all layers.

    Args:
      x: inputs [B, T, I].
      carry: initial (h, c), each [L, B, H]; zeros when None.
      lengths: valid steps per sequence [B], or None.
      mask: [B, T] bool steps to run (Keras `Masking`), or None.

    Returns:
      (final carry (h, c) each [L, B, H], outputs [B, T, H] or [B, H]).
    """
    check_options("LSTM", self.hidden, self.num_layers, self.remat, self.unroll)
    batch, _, _ = check_input("LSTM", x)
    if carry is None:
      carry = zero_carry((self.num_layers, batch), self.hidden, acc_dtype(self.dtype))
    check_carry("LSTM", carry, (self.num_layers, batch, self.hidden),
                "[num_layers, batch, hidden]")
    hs, cs = [], []
    for layer in range(self.num_layers):
      (h, c), x = LSTMLayer(self.hidden, **options_of(self), name=f"layer{layer}")(
          x, (carry[0][layer], carry[1][layer]), lengths, mask)
      hs.append(h)
      cs.append(c)
    carry = (jnp.stack(hs), jnp.stack(cs))
    return carry, (x if self.return_sequences else carry[0][-1])


def check_options(module: str, hidden: Any, num_layers: Any, remat: Any, unroll: Any) -> None:
  """ValueError naming the argument for sizes and scan options out of range."""
  for name, value, low in (("hidden", hidden, 1), ("num_layers", num_layers, 1),
                           ("remat", remat, -1), ("unroll", unroll, 0)):
    if not isinstance(value, int) or value < low:  # bool is an int: unroll=True is allowed
      raise ValueError(f"{module}: {name} must be an integer >= {low}; got {value!r}")


def check_input(module: str, x: Array) -> tuple[int, int, int]:
  """The (batch, time, features) of `x`, or a ValueError naming the expected shape."""
  if jnp.ndim(x) != 3:
    raise ValueError(f"{module}: x must be [batch, time, features] (rank 3); got shape "
                     f"{jnp.shape(x)}")
  return jnp.shape(x)


def check_carry(module: str, carry: Any, shape: tuple[int, ...], layout: str) -> None:
  """A ValueError unless `carry` is a pair (h, c) of arrays of `shape`."""
  if (not isinstance(carry, tuple | list) or len(carry) != 2
      or any(jnp.shape(a) != shape for a in carry)):
    got = ([jnp.shape(a) for a in carry] if isinstance(carry, tuple | list)
           else type(carry).__name__)
    raise ValueError(f"{module}: carry must be (h, c), each {layout} = {shape}; got {got}")


def check_lengths(module: str, lengths: Array | None, batch: int, steps: int) -> Array | None:
  """`lengths` [B] within [0, T]: checked when known at trace time, clipped when traced
  (a length past T means the whole sequence)."""
  if lengths is None:
    return None
  if jnp.shape(lengths) != (batch,):
    raise ValueError(f"{module}: lengths must be [batch] = ({batch},); got shape "
                     f"{jnp.shape(lengths)}")
  try:
    values = np.asarray(lengths)
  except jax.errors.TracerArrayConversionError:  # traced: known only when it runs
    values = None
  if values is not None and values.size and (values.min() < 0 or values.max() > steps):
    raise ValueError(f"{module}: lengths must be within [0, {steps}] (the time steps); "
                     f"got {values.min()}..{values.max()}")
  return jnp.clip(jnp.asarray(lengths), 0, steps)


def scale_gains(params: Any, kernel_gain: Array | float, recurrent_gain: Array | float,
                forget_shift: Array | float) -> Any:
  """`params` with every LSTM cell's kernels scaled and its forget-gate bias shifted.

  A model initialised with unit gains, scaled by `kernel_gain` (input kernel)
  and `recurrent_gain` (recurrent kernel), equals the model initialised with
  those gains (every `initializer` is linear in its gain); `forget_shift` is
  added to the forget gate's slice [H:2H] of each bias. Grids of runs use it
  to vary gains as arrays, one compiled program for all of them.
  """
  if isinstance(params, dict) and {"input_kernel", "recurrent_kernel", "bias"} <= set(params):
    hidden = params["recurrent_kernel"].shape[0]
    return {**params, "input_kernel": params["input_kernel"] * kernel_gain,
            "recurrent_kernel": params["recurrent_kernel"] * recurrent_gain,
            "bias": params["bias"].at[hidden:2 * hidden].add(forget_shift)}
  if isinstance(params, dict):
    return {k: scale_gains(v, kernel_gain, recurrent_gain, forget_shift)
            for k, v in params.items()}
  return params


def num_lstm_params(in_features: int, hidden: int, num_layers: int = 1) -> int:
  """Parameter count in the single-bias (Keras) layout: 4H(I + H + 1) per layer."""
  total, fan_in = 0, in_features
  for _ in range(num_layers):
    total += 4 * hidden * (fan_in + hidden + 1)
    fan_in = hidden
  return total
