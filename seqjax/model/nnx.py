"""The LSTM as native Flax NNX modules: `LSTMCell`, `LSTMLayer` and `LSTM`.

They hold their parameters as `nnx.Param`s in the linen modules' layout and
names (`layer0.cell.input_kernel`, ...), and compute with the same functions
(`lstm.run_layer`, `lstm.run_stack`): the same fused scan and hand-written VJP,
the same options (`lstm.LSTMOptions`: initializers, reverse, unroll, remat,
fused, dtype, param_dtype, precision), the same checks and errors. So a
parameter tree moves between the two APIs as it is (`load_linen_params`,
`linen_params`).

Shape letters as in `seqjax.model.lstm`: B batch, T time, I inputs, H hidden, L layers.

  model = seqjax.model.nnx.LSTM(3, 32, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
  carry, y = model(x)  # x [B, T, 3] -> y [B, T, 64]
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqjax.model import lstm
from seqjax.model.numerics import canonical_precision
from seqjax.model.recurrence import acc_dtype, lstm_step

Array = jax.Array
Carry = lstm.Carry

# The options every module here takes by keyword, with the linen modules' defaults.
_FIELDS = {f.name: f for f in dataclasses.fields(lstm.LSTMOptions)
           if f.name not in ("parent", "name")}
_CELL_FIELDS = {f.name for f in dataclasses.fields(lstm.CellOptions)} & set(_FIELDS)


def _set_options(module: nnx.Module, options: dict[str, Any], allowed: set[str],
                 owner: str) -> None:
  """Sets each option (given, or its linen default) as an attribute of `module`."""
  unknown = sorted(set(options) - allowed)
  if unknown:
    raise TypeError(f"{owner}: unknown option(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(sorted(allowed))}")
  for name in sorted(allowed):
    field = _FIELDS[name]
    default = (field.default if field.default is not dataclasses.MISSING
               else field.default_factory())
    setattr(module, name, options.get(name, default))


class LSTMCell(nnx.RNNCellBase):
  """The LSTM cell: parameters and one step, `(carry, x_t) -> (carry, h_t)`.

  An NNX cell (`nnx.RNNCellBase`), so `nnx.RNN` and `nnx.Bidirectional` run
  it. Its carry is (h, c), PyTorch's order (Flax's own cells carry (c, h)).

  Args:
    in_features: I.
    hidden: H.
    rngs: the "params" stream initialises the parameters.
    **options: the `lstm.CellOptions` (kernel_init, recurrent_init,
      bias_init, forget_bias, chrono_tmax, dtype, param_dtype, precision).
  """

  def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs, **options):
    _set_options(self, options, _CELL_FIELDS, "LSTMCell")
    lstm.check_options("LSTMCell", hidden, 1, 0, 0)
    if (not isinstance(in_features, numbers.Integral) or isinstance(in_features, bool)
        or in_features < 1):
      raise ValueError(f"LSTMCell: in_features must be an integer >= 1; got {in_features!r}")
    self.in_features, self.hidden = in_features, hidden
    g = 4 * hidden
    self.input_kernel = nnx.Param(self.kernel_init(rngs.params(), (in_features, g),
                                                   self.param_dtype))
    self.recurrent_kernel = nnx.Param(lstm.per_gate(self.recurrent_init)(
        rngs.params(), (hidden, g), self.param_dtype))
    self.bias = nnx.Param(lstm.bias_initializer(hidden, self.bias_init, self.forget_bias,
                                                self.chrono_tmax)(rngs.params(), (g,),
                                                                  self.param_dtype))

  def weights(self) -> tuple[Array, Array, Array]:
    """(input_kernel [I, G], recurrent_kernel [H, G], bias [G])."""
    return self.input_kernel[...], self.recurrent_kernel[...], self.bias[...]

  def project(self, x: Array) -> Array:
    """`x @ W_x + b` for any leading shape: [..., I] -> [..., G] (float32)."""
    return lstm.project(x, self.input_kernel[...], self.bias[...], self.dtype, self.precision)

  def __call__(self, carry: Carry, x_t: Array) -> tuple[Carry, Array]:
    """One step on raw input x_t [B, I]; returns ((h, c), h), each [B, H]."""
    if jnp.shape(x_t)[-1:] != (self.in_features,):
      raise ValueError(f"LSTMCell: x_t must be [batch, {self.in_features}] (in_features); got "
                       f"shape {jnp.shape(x_t)}")
    carry = lstm_step(self.recurrent_kernel[...], carry, self.project(x_t), self.dtype,
                      canonical_precision(self.precision))
    return carry, carry[0]

  def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None,
                       carry_init: Any = None) -> Carry:
    """The zero carry for inputs of `input_shape` [*batch, I]: (h, c), each [*batch, H]."""
    del rngs, carry_init  # the carry starts at zero, as in PyTorch and Keras
    return lstm.zero_carry(tuple(input_shape[:-1]), self.hidden, acc_dtype(self.dtype))

  @property
  def num_feature_axes(self) -> int:
    return 1


class LSTMLayer(nnx.Module):
  """One LSTM layer over a sequence: [B, T, I] -> [B, T, H] (see `lstm.LSTMLayer`).

  Args:
    in_features: I.
    hidden: H.
    rngs: the "params" stream initialises the parameters.
    **options: the `lstm.LSTMOptions` (the cell's, and reverse, unroll,
      remat, fused).
  """

  def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs, **options):
    _set_options(self, options, set(_FIELDS), "LSTMLayer")
    self.hidden = hidden
    lstm.check_options("LSTMLayer", hidden, 1, self.remat, self.unroll)
    self.cell = LSTMCell(in_features, hidden, rngs=rngs,
                         **{k: v for k, v in options.items() if k in _CELL_FIELDS})

  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None, *, input_mask: Array | None = None,
               recurrent_mask: Array | None = None) -> tuple[Carry, Array]:
    """As `lstm.LSTMLayer.__call__`: (final carry (h, c) each [B, H], outputs [B, T, H])."""
    batch, steps, in_features = lstm.check_layer_inputs("LSTMLayer", self, x, carry, lengths,
                                                        mask)
    if in_features != self.cell.in_features:
      raise ValueError(f"LSTMLayer: x has {in_features} features; the layer was built for "
                       f"in_features={self.cell.in_features}")
    if carry is None:
      carry = lstm.zero_carry((batch,), self.hidden, acc_dtype(self.dtype))
    return lstm.run_layer(*self.cell.weights(), x, carry,
                          lstm.check_lengths("LSTMLayer", lengths, batch, steps), mask,
                          reverse=self.reverse, unroll=self.unroll, remat=self.remat,
                          fused=self.fused, kernel=self.kernel, dtype=self.dtype,
                          precision=self.precision,
                          input_mask=input_mask, recurrent_mask=recurrent_mask)


class LSTM(nnx.Module):
  """Stacked (optionally bidirectional) LSTM, the NNX twin of `lstm.LSTM`.

  Args:
    in_features: I, the input features.
    hidden: H, the same for every layer.
    num_layers: L.
    return_sequences: outputs [B, T, H] if True, else the last step's [B, H].
    bidirectional, merge, dropout, input_dropout, recurrent_dropout: as in
      `lstm.LSTM`.
    deterministic: True runs without dropout; `model.eval()` sets it and
      `model.train()` clears it (as for `nnx.Dropout`); a `deterministic`
      given to `__call__` wins.
    rngs: "params" initialises the parameters; with a dropout rate > 0, the
      "dropout" stream (or "default") draws the masks.
    **options: the `lstm.LSTMOptions` (initializers, reverse, unroll, remat,
      fused, dtype, param_dtype, precision).
  """

  def __init__(self, in_features: int, hidden: int, *, num_layers: int = 1,
               return_sequences: bool = True, bidirectional: bool = False,
               merge: str = "concat", dropout: float = 0.0, input_dropout: float = 0.0,
               recurrent_dropout: float = 0.0, deterministic: bool = False,
               rngs: nnx.Rngs, **options):
    _set_options(self, options, set(_FIELDS), "LSTM")
    self.hidden, self.num_layers = hidden, num_layers
    self.return_sequences, self.bidirectional, self.merge = (return_sequences, bidirectional,
                                                             merge)
    self.dropout, self.input_dropout = dropout, input_dropout
    self.recurrent_dropout, self.deterministic = recurrent_dropout, deterministic
    lstm.check_stack_options("LSTM", self)
    count = lstm.directions(bidirectional)
    width = lstm.output_features(hidden, bidirectional, merge)
    for index in range(num_layers * count):
      backward = bidirectional and index % 2 == 1
      layer_options = {**lstm.options_of(self), "reverse": self.reverse or backward}
      setattr(self, lstm.layer_name(index, self),
              LSTMLayer(in_features if index < count else width, hidden, rngs=rngs,
                        **layer_options))
    self.rngs = nnx.data(None)
    if any((dropout, input_dropout, recurrent_dropout)):
      try:
        self.rngs = rngs["dropout"].fork()
      except (KeyError, AttributeError):  # Rngs with neither a "dropout" nor a "default" stream
        raise ValueError("LSTM: a dropout rate > 0 needs rngs with a 'dropout' (or 'default') "
                         "stream, e.g. nnx.Rngs(0, dropout=1)") from None

  def __call__(self, x: Array, carry: Carry | None = None, lengths: Array | None = None,
               mask: Array | None = None, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | Array | None = None) -> tuple[Carry, Array]:
    """As `lstm.LSTM.__call__`: (final carry each [L * D, B, H], outputs).

    `rngs`: a key or Rngs for this call's dropout masks, instead of the module's.
    """
    batch, _, _ = lstm.check_input("LSTM", x)
    carry = lstm.stack_carry("LSTM", self, carry, batch)
    deterministic = self.deterministic if deterministic is None else deterministic
    key = None
    if not deterministic and any((self.dropout, self.input_dropout, self.recurrent_dropout)):
      key = _dropout_key(rngs if rngs is not None else self.rngs)

    def layer(index, x, carry, reverse, input_mask, recurrent_mask):
      del reverse  # fixed when the layer was built
      return getattr(self, lstm.layer_name(index, self))(
          x, carry, lengths, mask, input_mask=input_mask, recurrent_mask=recurrent_mask)

    return lstm.run_stack(layer, x, carry, num_layers=self.num_layers, hidden=self.hidden,
                          bidirectional=self.bidirectional, merge=self.merge,
                          reverse=self.reverse, dropout=self.dropout,
                          input_dropout=self.input_dropout,
                          recurrent_dropout=self.recurrent_dropout, key=key,
                          return_sequences=self.return_sequences)


def _dropout_key(rngs: Any) -> Array:
  if rngs is None:
    raise ValueError("LSTM: dropout in training needs rngs: build the module with "
                     "rngs=nnx.Rngs(...), pass rngs= to the call, or run it with "
                     "deterministic=True (model.eval())")
  if isinstance(rngs, nnx.Rngs):
    return rngs["dropout"]()
  if isinstance(rngs, nnx.RngStream):
    return rngs()
  return rngs


def linen_params(module: nnx.Module) -> dict[str, Any]:
  """The parameters of an NNX module here as the linen module's `params` tree."""
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def load_linen_params(module: nnx.Module, params: dict[str, Any]) -> None:
  """Sets an NNX module's parameters from the linen twin's `params` (same layout)."""
  state = nnx.state(module, nnx.Param)
  expected = jax.tree.map(jnp.shape, nnx.to_pure_dict(state))
  given = jax.tree.map(jnp.shape, params)
  if expected != given:
    raise ValueError(f"load_linen_params: the params' layout {given} differs from the "
                     f"module's {expected}")
  nnx.replace_by_pure_dict(state, params)
  nnx.update(module, state)
