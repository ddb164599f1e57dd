"""Heads on top of the LSTM: last-state regressor/classifier and per-step Dense.

Shape letters: B batch, T time, I input features, H hidden, O outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import lstm as lstm_lib
from seqjax import numerics

ACTIVATIONS = {
    "none": lambda x: x,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
}
HEADS = ("last", "per_step")


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation: unknown {name!r}; allowed: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class DenseStack(nn.Module):
  """Dense -> activation -> Dropout, repeated, then a Dense output layer.

  Acts on the last axis, so on [B, H] it is a regressor/classifier head and on
  [B, T, H] it is Keras' `TimeDistributed(Dense)`.

  Attributes:
    hidden: widths of the hidden Dense layers (may be empty).
    out_features: O.
    activation: hidden activation name (see `ACTIVATIONS`).
    out_activation: output activation name; "none" gives logits / raw values.
    dropout: dropout rate after each hidden layer.
    dtype, precision: matmul dtype and precision (see `lstm.LSTMCell`).
  """
  hidden: Sequence[int] = ()
  out_features: int = 1
  activation: str = "relu"
  out_activation: str = "none"
  dropout: float = 0.0
  dtype: Any = jnp.float32
  precision: numerics.Precision = "highest"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[..., H] -> [..., O]."""
    act = activation(self.activation)
    precision = numerics.canonical_precision(self.precision)
    for width in self.hidden:
      x = act(nn.Dense(width, dtype=self.dtype, precision=precision)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.out_features, dtype=self.dtype, precision=precision)(x)
    return activation(self.out_activation)(x.astype(jnp.float32))


class SequenceModel(nn.Module):
  """LSTM + head: `(x [B, T, I], carry) -> (carry, y)`.

  `head="last"` maps the last valid LSTM output to y [B, O] (regressor or
  classifier); `head="per_step"` maps every step, y [B, T, O].

  Attributes:
    hidden, num_layers, unroll, remat, reverse, forget_bias, chrono_tmax,
      dtype, precision: LSTM options (`lstm.LSTMLayer`); `precision` applies
      to the head's matmuls too.
    kernel_init, recurrent_init, bias_init: LSTM initializers.
    head: "last" or "per_step".
    head_hidden, out_features, activation, out_activation, dropout: see
      `DenseStack`.
  """
  hidden: int
  out_features: int = 1
  num_layers: int = 1
  head: str = "last"
  head_hidden: Sequence[int] = ()
  activation: str = "relu"
  out_activation: str = "none"
  dropout: float = 0.0
  kernel_init: lstm_lib.Initializer = nn.initializers.glorot_uniform()
  recurrent_init: lstm_lib.Initializer = nn.initializers.orthogonal()
  bias_init: lstm_lib.Initializer = nn.initializers.zeros
  forget_bias: float = 1.0
  chrono_tmax: float = 0.0
  reverse: bool = False
  unroll: int | bool = 1
  remat: int = 0
  dtype: Any = jnp.float32
  precision: numerics.Precision = "highest"

  @nn.compact
  def __call__(self, x: jax.Array, carry: lstm_lib.Carry | None = None,
               lengths: jax.Array | None = None, mask: jax.Array | None = None, *,
               train: bool = False) -> tuple[lstm_lib.Carry, jax.Array]:
    """Returns (carry (h, c) each [L, B, H], y [B, O] or [B, T, O])."""
    if self.head not in HEADS:
      raise ValueError(f"model.head: unknown {self.head!r}; allowed: {', '.join(HEADS)}")
    carry, feats = lstm_lib.LSTM(
        self.hidden, self.num_layers, return_sequences=self.head == "per_step",
        kernel_init=self.kernel_init, recurrent_init=self.recurrent_init,
        bias_init=self.bias_init, forget_bias=self.forget_bias, chrono_tmax=self.chrono_tmax,
        reverse=self.reverse, unroll=self.unroll, remat=self.remat, dtype=self.dtype,
        precision=self.precision, name="lstm")(x, carry, lengths, mask)
    y = DenseStack(tuple(self.head_hidden), self.out_features, self.activation,
                   self.out_activation, self.dropout, self.dtype, self.precision,
                   name="head")(feats, train=train)
    return carry, y
