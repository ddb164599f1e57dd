"""A hand-written LSTM (Flax linen) run under `jax.lax.scan`.

Shape letters used in this module:
  B  batch                 T  time steps
  I  input features        H  hidden units per layer
  G  gates, G = 4H, ordered i, f, g, o (PyTorch and Keras order)
  L  stacked layers

Carry convention: a carry is the pair `(h, c)`. For one layer each is [B, H];
for the stacked `LSTM` each is [L * D, B, H] (D = 2 directions when
bidirectional), the layout of `torch.nn.LSTM`'s `(h_n, c_n)`. The carry is
always returned to the caller, so stateful use (rollout, streaming chunks) is
the caller passing it back in.

The modules here are Flax linen; `seqjax.model.nnx` has their NNX twins. Both compute
with the functions `run_layer` and `run_stack`.

Everything that does not depend on the carry is computed for the whole
sequence before the scan: the input projection `x @ W_x + b` is one matmul,
and the scan body is only `h @ W_h` (one fused [H, G] matmul) plus gate math.
The carry and the gate non-linearities stay in float32 whatever `dtype` the
matmuls use.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import flip_sequences

from seqjax.model import numerics, recurrence
from seqjax.model.kernels import pallas_lstm, selection
from seqjax.model.numerics import Precision, canonical_precision
from seqjax.model.recurrence import acc_dtype, lstm_step

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

  `LSTMCell`, `LSTMLayer`, `LSTM` and `sequence.SequenceModel` inherit these
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
    unroll: `lax.scan` unroll factor; 0 (the default) chooses it by shape and
      platform (`auto_unroll`).
    remat: checkpointed chunk length for long sequences (see `scan_layer`);
      0 off, -1 (the default) chosen by shape (`auto_remat`).
    kernel: what runs the recurrence (`seqjax.model.kernels.selection`): "xla"
      (`recurrence.scan`), "pallas" (the fused Pallas kernel; interpreted off
      NVIDIA GPUs) or "auto" (Pallas only where measured faster).
    fused: the hand-written VJP of `recurrence.scan` (fast). `jax.jvp` and
      `jax.jacfwd` applied to the LSTM take JAX's autodiff of the scan by
      themselves; False always does, as forward mode through `jit`,
      `checkpoint`, `lax.scan` or `jax.linearize` needs (docs/lstm.md).
  """
  reverse: bool = False
  unroll: int | bool = 0
  remat: int = -1
  fused: bool = True
  kernel: str = "auto"


def options_of(module: Any, kind: type[nn.Module] = LSTMOptions,
               exclude: type[nn.Module] | None = None) -> dict[str, Any]:
  """The values of `kind`'s option fields on `module` (less those of `exclude`), as
  keyword arguments."""
  skip = {"parent", "name"} | ({f.name for f in dataclasses.fields(exclude)} if exclude else set())
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(kind) if f.name not in skip}


def bias_initializer(hidden: int, bias_init: Initializer, forget_bias: float = 1.0,
                     chrono_tmax: float = 0.0) -> Initializer:
  """The [G] bias initializer of a cell: `bias_init` plus the forget-gate bias, or the
  chrono initialisation (see `CellOptions`)."""
  def init(key, shape, dtype=jnp.float32):
    key, chrono_key = jax.random.split(key)
    extra = jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(forget_bias)
    if chrono_tmax > 0:
      b_f = jnp.log(jax.random.uniform(chrono_key, (hidden,), dtype, 1.0,
                                       max(chrono_tmax - 1.0, 1.0)))
      extra = jnp.zeros(shape, dtype).at[:hidden].set(-b_f).at[hidden:2 * hidden].set(b_f)
    return bias_init(key, shape, dtype) + extra
  return init


def project(x: Array, input_kernel: Array, bias: Array, dtype: Any = jnp.float32,
            precision: Precision = "highest") -> Array:
  """`x @ W_x + b` for any leading shape: [..., I] -> [..., G], in `acc_dtype(dtype)`."""
  acc = acc_dtype(dtype)
  gx = jnp.dot(x.astype(dtype), input_kernel.astype(dtype),
               precision=canonical_precision(precision), preferred_element_type=acc)
  return gx + bias.astype(acc)


class LSTMCell(CellOptions, nn.RNNCellBase):
  """The LSTM cell: parameters and one step, `(carry, x_t) -> (carry, h_t)`.

  A Flax cell (`nn.RNNCellBase`): `nn.RNN(LSTMCell(H))` and `nn.Bidirectional`
  run it, with the input size read from the first input. Its carry is (h, c)
  (PyTorch's order; Flax's own LSTM cells carry (c, h)).

  Attributes:
    hidden: H.
    in_features: I, or None to take it from the input (checked when given).
    and the `CellOptions`, by keyword.
  """
  hidden: int
  in_features: int | None = None

  @nn.compact
  def weights(self, in_features: int) -> tuple[Array, Array, Array]:
    """The parameters (input_kernel [I, G], recurrent_kernel [H, G], bias [G])."""
    if self.in_features is not None and in_features != self.in_features:
      raise ValueError(f"LSTMCell: the input has {in_features} features; in_features is "
                       f"{self.in_features}")
    if in_features < 1:
      raise ValueError(f"LSTMCell: x has {in_features} features a step; it needs at least 1")
    if self.has_variable("params", "input_kernel"):  # applying: the features it was made for
      made_for = jnp.shape(self.get_variable("params", "input_kernel"))[0]
      if in_features != made_for:
        raise ValueError(f"LSTMCell: x has {in_features} features a step; the parameters "
                         f"were made for {made_for}")
    g = 4 * self.hidden
    input_kernel = self.param("input_kernel", self.kernel_init, (in_features, g),
                              self.param_dtype)
    recurrent_kernel = self.param("recurrent_kernel", per_gate(self.recurrent_init),
                                  (self.hidden, g), self.param_dtype)
    bias = self.param("bias", bias_initializer(self.hidden, self.bias_init, self.forget_bias,
                                               self.chrono_tmax), (g,), self.param_dtype)
    return input_kernel, recurrent_kernel, bias

  def project(self, x: Array) -> Array:
    """`x @ W_x + b` for any leading shape: [..., I] -> [..., G] (float32)."""
    input_kernel, _, bias = self.weights(jnp.shape(x)[-1])
    return project(x, input_kernel, bias, self.dtype, self.precision)

  def __call__(self, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
    """One step on raw input x_t [B, I]; returns ((h, c), h), each [B, H]."""
    input_kernel, recurrent_kernel, bias = self.weights(jnp.shape(x_t)[-1])
    carry = lstm_step(recurrent_kernel, carry,
                      project(x_t, input_kernel, bias, self.dtype, self.precision),
                      self.dtype, canonical_precision(self.precision))
    return carry, carry[0]

  @nn.nowrap
  def initialize_carry(self, rng: Any, input_shape: tuple[int, ...]) -> Carry:
    """The zero carry for inputs of `input_shape` [*batch, I]: (h, c), each [*batch, H]."""
    del rng  # the carry starts at zero, as in PyTorch and Keras
    return zero_carry(tuple(input_shape[:-1]), self.hidden, acc_dtype(self.dtype))

  @property
  def num_feature_axes(self) -> int:
    return 1


def zero_carry(batch_shape: tuple[int, ...], hidden: int, dtype: Any = jnp.float32) -> Carry:
  """The zero carry (h, c), each [*batch_shape, H] (two buffers, so both can be donated)."""
  shape = (*batch_shape, hidden)
  return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


# The `lax.scan` unroll by platform and per-step work B*H: rows (largest B*H, unroll),
# the first that fits wins. Each scan iteration costs a loop overhead (CPU) or a few
# kernel launches (GPU); unrolling amortises it, at the price of compile time and
# code size, and small per-step work gains the most. The rows follow the figures of
# `python -m seqjax.bench --unroll=1,4,8,16,32,64,128` (docs/speed.md for the CPU,
# docs/accelerators.md for the GPU): on a CPU unrolling pays for tiny steps only; on a
# GPU 32 was the fastest for the mean and freq shapes (B*H 10 and 3200) and 8 the slowest
# of all for mean, so no GPU row chooses 8; the larger GPU rows (not yet measured) and
# the TPU rows (never measured) keep 16 and 4.
UNROLL_TABLE = {
    "cpu": ((256, 8), (None, 1)),
    "gpu": ((4096, 32), (65536, 16), (None, 4)),
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
               precision: Precision = "highest", remat: int = 0, fused: bool = True,
               h_mask: Array | None = None, kernel: str = "xla") -> tuple[Carry, Array]:
  """Runs the recurrence over time on projected inputs (`recurrence.scan`), in remat chunks.

  Args:
    w_h, gx, carry, mask, unroll, dtype, precision: see `recurrence.scan` (gx
      is [T, B, G]).
    remat: > 0 runs the scan in chunks of `remat` steps under `jax.checkpoint`:
      the backward pass keeps only the carries between chunks and recomputes
      a chunk's gates when it reaches it, so a long sequence needs memory for
      T/remat + remat steps instead of T (at the cost of a second forward).
    fused: the hand-written VJP (`recurrence.scan`); False uses JAX's autodiff,
      as forward-mode differentiation does by itself.
    h_mask: [B, H] recurrent dropout mask (see `recurrence.scan`), or None.
    kernel: "xla", "pallas" or "auto" (`kernels.selection`); the Pallas kernel
      runs only on the fused path.

  Returns:
    (final carry, outputs [T, B, H]).
  """
  # Seen here, before remat's scan hides the forward trace inside a jaxpr.
  fused = fused and not recurrence.forward_mode((w_h, gx, carry))
  steps, batch, _ = gx.shape
  hidden = w_h.shape[0]
  pallas = fused and selection.choose(kernel, batch, hidden, dtype=dtype) == "pallas"
  interpret = selection.interpreted()
  if pallas and not interpret:  # the lengths each chunk of the remat scan runs
    lengths = {steps} if not remat or remat >= steps else {remat, steps % remat} - {0}
    pallas = all(selection.compiles(n, batch, hidden, dtype, w_h.dtype,
                                    canonical_precision(precision)) for n in lengths)

  def run(carry, xs):
    gx, mask = xs
    if pallas:
      return pallas_lstm.scan(w_h, gx, carry, mask, h_mask, dtype=dtype, precision=precision,
                              interpret=interpret)
    return recurrence.scan(w_h, gx, carry, mask, h_mask, unroll=unroll, dtype=dtype,
                           precision=precision, fused=fused)

  xs = (gx, mask)
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


def run_layer(input_kernel: Array, recurrent_kernel: Array, bias: Array, x: Array,
              carry: Carry, lengths: Array | None = None, mask: Array | None = None, *,
              reverse: bool = False, unroll: int | bool = 0, remat: int = -1,
              fused: bool = True, kernel: str = "auto", dtype: Any = jnp.float32,
              precision: Precision = "highest", input_mask: Array | None = None,
              recurrent_mask: Array | None = None) -> tuple[Carry, Array]:
  """One LSTM layer over a sequence given its parameters: [B, T, I] -> [B, T, H].

  The computation of `LSTMLayer`, for modules of any API (linen, NNX) to share.
  Arguments as in `LSTMLayer.__call__` (checked there), plus:
    input_mask: [B, I] multiplier of every step's input (input dropout), or None.
    recurrent_mask: [B, H] multiplier of h before the recurrent matmul
      (recurrent dropout), or None.
  """
  batch, steps, _ = jnp.shape(x)
  hidden = recurrent_kernel.shape[0]
  if lengths is not None:
    mask = jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]  # [B, T]
  if mask is not None:  # padding (even NaN) must not reach the outputs or any gradient
    x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
  if input_mask is not None:
    x = x * input_mask[:, None, :].astype(x.dtype)

  def flip(a):  # reverse each sequence within its valid length
    return flip_sequences(a, lengths, num_batch_dims=1, time_major=False) if reverse else a

  # One matmul for all steps, time-major from the start: transposing x [B, T, I]
  # is cheaper than transposing its projection [B, T, G] (and its gradient).
  gx = project(jnp.swapaxes(flip(x), 0, 1), input_kernel, bias, dtype, precision)  # [T, B, G]
  if mask is not None:
    mask = jnp.swapaxes(flip(mask), 0, 1)  # [T, B]
  unroll = unroll or auto_unroll(steps, batch, hidden)
  remat = auto_remat(steps, batch, hidden) if remat == -1 else remat
  carry, ys = scan_layer(recurrent_kernel, gx, carry, mask, unroll=unroll, dtype=dtype,
                         precision=precision, remat=remat, fused=fused, h_mask=recurrent_mask,
                         kernel=kernel)
  return carry, flip(jnp.swapaxes(ys, 0, 1))


class LSTMLayer(LSTMOptions):
  """One LSTM layer over a sequence: [B, T, I] -> [B, T, H].

  Attributes:
    hidden: H.
    and the `LSTMOptions`, by keyword.
  """
  hidden: int

  @nn.compact
  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None, *, input_mask: Array | None = None,
               recurrent_mask: Array | None = None) -> tuple[Carry, Array]:
    """Runs the layer.

    Args:
      x: inputs [B, T, I].
      carry: initial (h, c), each [B, H]; zeros when None.
      lengths: valid steps per sequence [B] (right padding), or None.
      mask: [B, T] bool, steps to run anywhere in the sequence (Keras
        `Masking`); skipped steps keep the carry and output 0. At most one of
        `lengths` and `mask`.
      input_mask, recurrent_mask: per-sequence dropout masks [B, I] and [B, H],
        already scaled (`LSTM` draws them), or None.

    Returns:
      (final carry, outputs [B, T, H]); outputs are 0 on padded/masked steps.
    """
    batch, steps, in_features = check_layer_inputs("LSTMLayer", self, x, carry, lengths, mask)
    cell = LSTMCell(self.hidden, in_features, **options_of(self, CellOptions), name="cell")
    if carry is None:
      carry = zero_carry((batch,), self.hidden, acc_dtype(self.dtype))
    return run_layer(*cell.weights(in_features), x, carry,
                     check_lengths("LSTMLayer", lengths, batch, steps), mask,
                     **options_of(self, LSTMOptions, exclude=CellOptions),
                     dtype=self.dtype, precision=self.precision, input_mask=input_mask,
                     recurrent_mask=recurrent_mask)


MERGES = ("concat", "sum")


def directions(bidirectional: bool) -> int:
  """D: the directions each layer of a stack runs."""
  return 2 if bidirectional else 1


def output_features(hidden: int, bidirectional: bool, merge: str = "concat") -> int:
  """The features of a stack layer's outputs (and of the next layer's input): 2H for a
  bidirectional layer merged by "concat", else H."""
  return hidden * (directions(bidirectional) if merge == "concat" else 1)


def stack_carry(module: str, stack: Any, carry: Carry | None, batch: int) -> Carry:
  """A stack's initial carry: `carry` (or zeros when None), checked to be (h, c), each
  [L * D, B, H]. `stack` has hidden, num_layers, bidirectional and dtype."""
  count = stack.num_layers * directions(stack.bidirectional)
  if carry is None:
    carry = zero_carry((count, batch), stack.hidden, acc_dtype(stack.dtype))
  check_carry(module, carry, (count, batch, stack.hidden),
              "[num_layers * directions, batch, hidden]")
  return carry


def dropout_mask(key: Array, rate: float, shape: tuple[int, ...], dtype: Any = jnp.float32
                 ) -> Array:
  """Inverted dropout's multiplier: 0 with probability `rate`, else 1 / (1 - rate)."""
  keep = 1.0 - rate
  return jax.random.bernoulli(key, keep, shape).astype(dtype) / jnp.asarray(keep, dtype)


def run_stack(layer: Callable[..., tuple[Carry, Array]], x: Array, carry: Carry, *,
              num_layers: int, hidden: int, bidirectional: bool = False,
              merge: str = "concat", reverse: bool = False, dropout: float = 0.0,
              input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
              key: Array | None = None, return_sequences: bool = True
              ) -> tuple[Carry, Array]:
  """The layers of a stacked (and maybe bidirectional) LSTM, shared by linen and NNX.

  Args:
    layer: `layer(index, x, carry, reverse, input_mask, recurrent_mask) ->
      (carry, outputs)` runs layer `index` (layer l's directions are 2l and
      2l + 1 when bidirectional, l otherwise).
    x: inputs [B, T, I].
    carry: (h, c), each [L * D, B, H] (D = 2 directions when bidirectional,
      in PyTorch's order: layer 0 forward, layer 0 backward, layer 1 forward...).
    num_layers, hidden, bidirectional, merge, reverse, dropout, input_dropout,
      recurrent_dropout, return_sequences: see `LSTM`.
    key: the PRNG key of the dropout masks; None runs without dropout
      (evaluation).

  Returns:
    (final carry, each [L * D, B, H]; outputs [B, T, H or 2H], or the last
    step's [B, H or 2H] when not `return_sequences`).
  """
  count = directions(bidirectional)
  batch = jnp.shape(x)[0]

  def next_key():
    nonlocal key
    key, sub = jax.random.split(key)
    return sub

  def merged(outs):
    if count == 1:
      return outs[0]
    return jnp.concatenate(outs, axis=-1) if merge == "concat" else outs[0] + outs[1]

  hs, cs = [], []
  for depth in range(num_layers):
    outs = []
    for direction in range(count):
      index = depth * count + direction
      input_mask = recurrent_mask = None
      if key is not None and input_dropout > 0:  # one mask per sequence, for every step
        input_mask = dropout_mask(next_key(), input_dropout, (batch, jnp.shape(x)[-1]))
      if key is not None and recurrent_dropout > 0:
        recurrent_mask = dropout_mask(next_key(), recurrent_dropout, (batch, hidden))
      (h, c), out = layer(index, x, (carry[0][index], carry[1][index]),
                          reverse if count == 1 else direction == 1,
                          input_mask, recurrent_mask)
      hs.append(h)
      cs.append(c)
      outs.append(out)
    x = merged(outs)
    if key is not None and dropout > 0 and depth < num_layers - 1:  # between layers
      x = x * dropout_mask(next_key(), dropout, jnp.shape(x), x.dtype)
  carry = (jnp.stack(hs), jnp.stack(cs))
  if return_sequences:
    return carry, x
  return carry, merged(list(carry[0][len(hs) - count:]))


class LSTM(LSTMOptions):
  """Stacked LSTM, the `torch.nn.LSTM(batch_first=True)` / Keras `LSTM` equivalent.

  Attributes:
    hidden: H, the same for every layer.
    num_layers: L.
    return_sequences: outputs [B, T, H] of the top layer if True, else its
      last valid output [B, H] (the top layer's final h).
    bidirectional: each layer runs a forward and a backward (reversed)
      direction, PyTorch's `bidirectional=True` and Keras' `Bidirectional`;
      the next layer reads both, merged by `merge`.
    merge: "concat" (outputs [.., 2H], forward first) or "sum" ([.., H]).
    dropout: rate of dropout on the outputs of every layer but the last
      (PyTorch's `dropout`), in training only.
    input_dropout, recurrent_dropout: rates of Keras' `dropout` and
      `recurrent_dropout`, in every layer: one mask per sequence (the same at
      every step; Gal and Ghahramani, 2016) on the layer's input and on h
      before the recurrent matmul, in training only.
    deterministic: True runs without dropout (evaluation); may also be given
      to `__call__`. Needed only when a rate is > 0; training draws the masks
      from the "dropout" PRNG stream (`rngs={"dropout": key}`).
    and the `LSTMOptions` (reverse, unroll, remat, initializers, ...), by keyword.
  """
  hidden: int
  num_layers: int = 1
  return_sequences: bool = True
  bidirectional: bool = False
  merge: str = "concat"
  dropout: float = 0.0
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None, *, deterministic: bool | None = None
               ) -> tuple[Carry, Array]:
    """Runs all layers.

    Args:
      x: inputs [B, T, I].
      carry: initial (h, c), each [L * D, B, H] (D = 2 when bidirectional);
        zeros when None.
      lengths: valid steps per sequence [B], or None.
      mask: [B, T] bool steps to run (Keras `Masking`), or None.
      deterministic: see the attribute.

    Returns:
      (final carry (h, c) each [L * D, B, H], outputs [B, T, H] or [B, H];
      2H instead of H when bidirectional with merge="concat").
    """
    check_stack_options("LSTM", self)
    batch, _, _ = check_input("LSTM", x)
    carry = stack_carry("LSTM", self, carry, batch)
    key = None
    if any((self.dropout, self.input_dropout, self.recurrent_dropout)):
      if not nn.merge_param("deterministic", self.deterministic, deterministic):
        key = self.make_rng("dropout")
    options = options_of(self)
    del options["reverse"]

    def layer(index, x, carry, reverse, input_mask, recurrent_mask):
      return LSTMLayer(self.hidden, **options, reverse=reverse, name=layer_name(index, self))(
          x, carry, lengths, mask, input_mask=input_mask, recurrent_mask=recurrent_mask)

    return run_stack(layer, x, carry, num_layers=self.num_layers, hidden=self.hidden,
                     bidirectional=self.bidirectional, merge=self.merge, reverse=self.reverse,
                     dropout=self.dropout, input_dropout=self.input_dropout,
                     recurrent_dropout=self.recurrent_dropout, key=key,
                     return_sequences=self.return_sequences)


def layer_name(index: int, stack: Any) -> str:
  """The parameter name of a stack's layer `index` (see `run_stack`): "layer{l}", and
  "layer{l}_reverse" for the backward direction (PyTorch's `_reverse` suffix)."""
  if not stack.bidirectional:
    return f"layer{index}"
  return f"layer{index // 2}" + ("_reverse" if index % 2 else "")


def check_layer_inputs(module: str, layer: Any, x: Array, carry: Carry | None,
                       lengths: Array | None, mask: Array | None) -> tuple[int, int, int]:
  """The (batch, time, features) of a layer's `x`, after checking its arguments."""
  if lengths is not None and mask is not None:
    raise ValueError(f"{module}: pass lengths or mask, not both")
  check_options(module, layer.hidden, 1, layer.remat, layer.unroll)
  selection.check(layer.kernel, module)
  batch, steps, in_features = check_input(module, x)
  if carry is not None:
    check_carry(module, carry, (batch, layer.hidden), "[batch, hidden]")
  if mask is not None and jnp.shape(mask) != (batch, steps):
    raise ValueError(f"{module}: mask must be [batch, time] = {(batch, steps)}; "
                     f"got shape {jnp.shape(mask)}")
  if mask is not None and jnp.result_type(mask) != jnp.bool_:
    raise ValueError(f"{module}: mask must be bool (True: run the step); got "
                     f"{jnp.result_type(mask)}")
  return batch, steps, in_features


def check_stack_options(module: str, stack: Any) -> None:
  """ValueError naming the argument for a stack's options out of range."""
  check_options(module, stack.hidden, stack.num_layers, stack.remat, stack.unroll)
  selection.check(stack.kernel, module)
  if stack.merge not in MERGES:
    raise ValueError(f"{module}: merge must be one of {', '.join(MERGES)}; got {stack.merge!r}")
  if stack.bidirectional and stack.reverse:
    raise ValueError(f"{module}: reverse=True with bidirectional=True: a bidirectional "
                     "stack already runs both directions; set one of them")
  for name in ("dropout", "input_dropout", "recurrent_dropout"):
    rate = getattr(stack, name)
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 <= rate < 1:
      raise ValueError(f"{module}: {name} must be a rate in [0, 1); got {rate!r}")
  if stack.dropout and stack.num_layers == 1:  # as PyTorch does
    warnings.warn(f"{module}: dropout={stack.dropout} acts between stacked layers, and "
                  "num_layers is 1: it does nothing", stacklevel=3)


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
  dtype = jnp.result_type(x)
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise ValueError(f"{module}: x must hold real numbers; got {dtype}")
  if jnp.shape(x)[2] < 1:
    raise ValueError(f"{module}: x has {jnp.shape(x)[2]} features a step; it needs at least 1")
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
  if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
    raise ValueError(f"{module}: lengths must be integers (valid steps); got "
                     f"{jnp.result_type(lengths)}")
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


def num_lstm_params(in_features: int, hidden: int, num_layers: int = 1,
                    bidirectional: bool = False, merge: str = "concat") -> int:
  """Parameter count in the single-bias (Keras) layout: 4H(I + H + 1) per layer and
  direction, where a layer reads 2H from a bidirectional one below it with "concat"."""
  total, fan_in = 0, in_features
  for _ in range(num_layers):
    total += directions(bidirectional) * 4 * hidden * (fan_in + hidden + 1)
    fan_in = output_features(hidden, bidirectional, merge)
  return total
