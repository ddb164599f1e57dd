"""Heads on top of the LSTM: last-state regressor/classifier and per-step Dense.

Shape letters: B batch, T time, I input features, H hidden, O outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from seqjax.config import validate
from seqjax.model import lstm as lstm_lib
from seqjax.model import numerics
from seqjax.model.kernels import selection

ACTIVATIONS = {
    "none": lambda x: x,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
}
HEADS = ("last", "per_step")
# How a "last" head sees the sequence: its last valid output, or every valid step's
# outputs averaged or maxed over time, or weighted by a learned attention score.
POOLS = ("last", "mean", "max", "attention")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# model.patch=0 reads long sequences in patches of steps, so that at most this many
# patches remain (measured on UCR/UEA data: docs/real_data.md).
MAX_PATCHED_STEPS = 256
# Sizes past any model seqjax trains; memory is checked against the device separately.
MAX_WIDTH = 2**16
MAX_LAYERS = 64


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


class ConvBranch(nn.Module):
  """A stack of 1-D convolutions over time beside the LSTM (LSTM-FCN's branch), each
  Dense over a window of steps, LayerNorm and ReLU, then the mean over valid steps.

  The windows are gathered as shifted copies of the sequence (`same` padding) and
  multiplied by one Dense kernel: a population's members (vmapped) then multiply
  batched matrices, where a vmapped `lax.conv` becomes a grouped convolution that
  XLA runs slowly on CPUs.

  Attributes:
    channels: output channels of each layer.
    kernels: window lengths of each layer.
    dtype, precision: see `DenseStack`.
  """
  channels: Sequence[int]
  kernels: Sequence[int]
  dtype: Any = jnp.float32
  precision: numerics.Precision = "highest"

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """x [B, T, I] (zeros past each sequence's end) -> [B, channels[-1]]."""
    precision = numerics.canonical_precision(self.precision)
    valid = _valid_steps(x.shape[:2], lengths, mask)[..., None]
    t = x.shape[1]
    for width, k in zip(self.channels, self.kernels, strict=True):
      x = jnp.where(valid, x, 0)
      padded = jnp.pad(x, ((0, 0), ((k - 1) // 2, k // 2), (0, 0)))
      windows = jnp.concatenate([padded[:, j:j + t] for j in range(k)], axis=-1)
      x = nn.Dense(width, dtype=self.dtype, precision=precision)(windows)
      x = nn.relu(nn.LayerNorm(dtype=self.dtype)(x))
    return pool_over_time(x, "mean", lengths, mask)


class SequenceModel(lstm_lib.LSTMOptions):
  """LSTM + head: `(x [B, T, I], carry) -> (carry, y)`.

  `head="last"` maps the last valid LSTM output to y [B, O] (regressor or
  classifier), or with `pool="mean"`/`"max"` the mean or maximum of every valid
  step's outputs [B, H] (`"attention"`: their softmax-weighted mean, a learned
  score a step); `head="per_step"` maps every step, y [B, T, O].
  With `patch` = k > 1 (head "last" only), the LSTM reads k consecutive steps as
  one step of k * I features (`patches`): a sequence k times shorter.

  Attributes:
    hidden, num_layers: the LSTM's H and L.
    head: "last" or "per_step".
    pool: for head "last": "last", "mean", "max" or "attention" (see `POOLS`).
    patch: for head "last": steps read as one (1: each step on its own).
    conv, conv_kernels: for head "last": the channels and window lengths of a
      `ConvBranch` beside the LSTM, whose output joins the LSTM's before the head
      (empty: none).
    head_hidden, out_features, activation, out_activation, dropout: see
      `DenseStack` (`dropout` is the head's).
    bidirectional, merge, input_dropout, recurrent_dropout: see `lstm.LSTM`.
    layer_dropout: the LSTM's `dropout`, between its layers.
    input_noise, input_scaling: augmentation while training (`train=True`, from the
      "dropout" rng): Gaussian noise of this std added to every input (Keras'
      `GaussianNoise`), and each sequence's features multiplied by a factor drawn
      around 1 with this std (magnitude scaling).
    level_features, view_dropout: for inputs read two ways, whose first
      `level_features` features carry each sequence's level and the rest its shape
      (`seqjax.data.tasks.data.normalize`'s "both"): while training, a share
      `view_dropout` of the sequences have their level features zeroed (`drop_level`;
      zero is the training set's mean level), so that the model learns every class
      from the shape too, not from the level alone.
    and the `lstm.LSTMOptions` (initializers, unroll, remat, reverse,
      precision, ...), by keyword; `precision` applies to the head's matmuls too.
  """
  hidden: int
  out_features: int = 1
  num_layers: int = 1
  head: str = "last"
  pool: str = "last"
  patch: int = 1
  conv: Sequence[int] = ()
  conv_kernels: Sequence[int] = ()
  head_hidden: Sequence[int] = ()
  activation: str = "relu"
  out_activation: str = "none"
  dropout: float = 0.0
  bidirectional: bool = False
  merge: str = "concat"
  layer_dropout: float = 0.0
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  input_noise: float = 0.0
  input_scaling: float = 0.0
  level_features: int = 0
  view_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, carry: lstm_lib.Carry | None = None,
               lengths: jax.Array | None = None, mask: jax.Array | None = None, *,
               train: bool = False) -> tuple[lstm_lib.Carry, jax.Array]:
    """Returns (carry (h, c) each [L * D, B, H], y [B, O] or [B, T, O]); D = 2
    directions when bidirectional. `train` turns the dropouts on."""
    if self.head not in HEADS:
      raise ValueError(f"model.head: unknown {self.head!r}; allowed: {', '.join(HEADS)}")
    if self.pool not in POOLS:
      raise ValueError(f"model.pool: unknown {self.pool!r}; allowed: {', '.join(POOLS)}")
    pooled = self.head == "last" and self.pool != "last"
    if (self.patch > 1 or self.conv) and self.head != "last":
      raise ValueError("model.patch and model.conv are for one prediction a sequence")
    if train and self.level_features and self.view_dropout:
      x = drop_level(x, self.make_rng("dropout"), self.level_features, self.view_dropout)
    if train and (self.input_noise or self.input_scaling):
      x = augment(x, self.make_rng("dropout"), self.input_noise, self.input_scaling)
    branch = (ConvBranch(tuple(self.conv), tuple(self.conv_kernels), self.dtype,
                         self.precision, name="conv")(x, lengths, mask)
              if self.conv else None)
    if self.patch > 1:
      x, lengths, mask = patches(x, self.patch, lengths, mask)
    carry, feats = lstm_lib.LSTM(
        self.hidden, self.num_layers, return_sequences=self.head == "per_step" or pooled,
        bidirectional=self.bidirectional, merge=self.merge, dropout=self.layer_dropout,
        input_dropout=self.input_dropout, recurrent_dropout=self.recurrent_dropout,
        **lstm_lib.options_of(self), name="lstm")(x, carry, lengths, mask,
                                                  deterministic=not train)
    if pooled and self.pool == "attention":
      # A score per step from its own output, softmaxed over the valid steps.
      score = nn.Dense(1, dtype=self.dtype, precision=self.precision, name="attention")(feats)
      feats = attend_over_time(feats, score[..., 0], lengths, mask)
    elif pooled:
      feats = pool_over_time(feats, self.pool, lengths, mask)
    if branch is not None:
      feats = jnp.concatenate([feats, branch.astype(feats.dtype)], axis=-1)
    y = DenseStack(tuple(self.head_hidden), self.out_features, self.activation,
                   self.out_activation, self.dropout, self.dtype, self.precision,
                   name="head")(feats, train=train)
    return carry, y

  def summary(self, steps: int, in_features: int, outputs: str, parameters: int) -> str:
    """One line, as Keras' `summary` would say it: the layers and their sizes, the
    parameters, and what goes in ([batch, steps, in_features]) and comes out (`outputs`,
    e.g. "3 classes")."""
    layers = f"LSTM {self.hidden}" + (f" x {self.num_layers} layers" if self.num_layers > 1
                                      else "")
    if self.bidirectional:
      layers += f", both directions ({self.merge})"
    reads = f" in patches of {self.patch} steps" if self.patch > 1 else ""
    if self.level_features and self.view_dropout:
      reads += f", the level zeroed in {self.view_dropout:.0%} of training sequences"
    over = ({"last": "last state", "mean": "mean over time", "max": "max over time",
             "attention": "attention over time"}[self.pool]
            if self.head == "last" else "every step")
    conv = f" + conv {'-'.join(map(str, self.conv))}" if self.conv else ""
    head = " -> ".join(["Dense " + str(w) for w in self.head_hidden] + [str(self.out_features)])
    return (f"model: {layers}{reads} ({over}){conv} -> head {head}; {parameters:,} parameters; "
            f"input [batch, {steps} steps, {in_features} feature"
            f"{'s' if in_features > 1 else ''}] -> {outputs}")

  def zero_carry(self, batch_size: int) -> lstm_lib.Carry:
    """The zero carry of a batch, (h, c) each [L * D, B, H] (stateful training starts here)."""
    return lstm_lib.stack_carry("SequenceModel", self, None, batch_size)


def augment(x: jax.Array, key: jax.Array, noise: float, scaling: float) -> jax.Array:
  """x [B, T, F] with each sequence's features scaled by 1 + `scaling` * N(0, 1) [B, 1, F]
  and `noise` * N(0, 1) [B, T, F] added (a padded step stays padding: the LSTM and the
  pooling read valid steps only)."""
  scale_key, noise_key = jax.random.split(key)
  b, _, f = x.shape
  if scaling:
    x = x * (1 + scaling * jax.random.normal(scale_key, (b, 1, f), x.dtype))
  if noise:
    x = x + noise * jax.random.normal(noise_key, x.shape, x.dtype)
  return x


def drop_level(x: jax.Array, key: jax.Array, level_features: int, rate: float) -> jax.Array:
  """x [B, T, F] with its first `level_features` features zeroed in a share `rate` of its
  sequences (each drawn on its own): those are read by their other features alone."""
  drop = jax.random.bernoulli(key, rate, (x.shape[0], 1, 1))
  return jnp.where(drop & (jnp.arange(x.shape[-1]) < level_features), jnp.zeros_like(x), x)


def patches(x: jax.Array, k: int, lengths: jax.Array | None = None,
            mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
  """x [B, T, I] as [B, ceil(T / k), k * I]: k consecutive steps a step, zeros past T and
  on masked steps. A patch is valid where any of its steps is: lengths [B] become
  ceil(lengths / k), mask [B, T] becomes [B, ceil(T / k)]."""
  b, t, i = x.shape
  pad = -t % k
  if lengths is not None:  # padding, even NaN, must not reach a valid patch
    x = jnp.where((jnp.arange(t)[None, :] < lengths[:, None])[..., None], x, 0)
  if mask is not None:
    x = jnp.where(mask[..., None], x, 0)
    mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(b, -1, k).any(-1)
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, (t + pad) // k, k * i)
  return x, None if lengths is None else -(-lengths // k), mask


def pool_over_time(feats: jax.Array, how: str, lengths: jax.Array | None = None,
                   mask: jax.Array | None = None) -> jax.Array:
  """The mean or maximum ("mean", "max") of feats [B, T, H] over each sequence's valid
  steps (before `lengths` [B], and where `mask` [B, T]): [B, H]."""
  valid = _valid_steps(feats.shape[:2], lengths, mask)[..., None]
  if how == "mean":
    return jnp.where(valid, feats, 0).sum(1) / jnp.maximum(valid.sum(1), 1)
  return jnp.where(valid, feats, -jnp.inf).max(1)


def attend_over_time(feats: jax.Array, score: jax.Array, lengths: jax.Array | None = None,
                     mask: jax.Array | None = None) -> jax.Array:
  """feats [B, T, H] averaged over each sequence's valid steps with the weights
  softmax(score [B, T]) over those steps: [B, H]."""
  valid = _valid_steps(feats.shape[:2], lengths, mask)
  # A finite floor, not -inf: a sequence with no valid step gets zeros, not NaN gradients.
  low = jnp.finfo(jnp.float32).min
  weight = jax.nn.softmax(jnp.where(valid, score.astype(jnp.float32), low), axis=1)
  weight = jnp.where(valid, weight, 0).astype(feats.dtype)
  return (weight[..., None] * jnp.where(valid[..., None], feats, 0)).sum(1)


def _valid_steps(shape: tuple[int, int], lengths: jax.Array | None,
                 mask: jax.Array | None) -> jax.Array:
  """[B, T] True on the steps before `lengths` [B] and where `mask` [B, T]."""
  valid = jnp.ones(shape, bool)
  if lengths is not None:
    valid = valid & (jnp.arange(shape[1])[None, :] < lengths[:, None])
  if mask is not None:
    valid = valid & mask
  return valid


def validate_config(m: ml_collections.ConfigDict) -> None:
  """Checks `config.model`; a bad value is a ConfigError naming the field."""
  validate.integer_in("model.hidden", m.hidden, 1, MAX_WIDTH)
  validate.integer_in("model.num_layers", m.num_layers, 1, MAX_LAYERS)
  validate.one_of("model.pool", m.pool, POOLS)
  validate.integer_in("model.patch", m.patch, 0, MAX_WIDTH)
  for width in m.conv:
    validate.integer_in("model.conv", width, 1, MAX_WIDTH)
  if len(m.conv_kernels) != len(m.conv):
    validate.fail("model.conv_kernels", tuple(m.conv_kernels), f"needs one window length for "
                  f"each of the {len(m.conv)} layers of model.conv={tuple(m.conv)}")
  for k in m.conv_kernels:
    validate.integer_in("model.conv_kernels", k, 1, MAX_WIDTH)
  for width in m.head_hidden:
    validate.integer_in("model.head_hidden", width, 1, MAX_WIDTH)
  validate.one_of("model.activation", m.activation, ACTIVATIONS)
  validate.one_of("model.out_activation", m.out_activation, ACTIVATIONS)
  validate.in_range("model.dropout", m.dropout, 0.0, 0.99)
  for field in ("layer_dropout", "input_dropout", "recurrent_dropout"):
    validate.in_range(f"model.{field}", m[field], 0.0, 0.99)
  for field in ("input_noise", "input_scaling"):
    validate.in_range(f"model.{field}", m.get(field, 0.0), 0.0, 10.0)
  validate.in_range("model.view_dropout", m.get("view_dropout", 0.0), 0.0, 0.99)
  if m.layer_dropout and m.num_layers == 1:
    validate.fail("model.layer_dropout", m.layer_dropout,
                  "acts between stacked LSTM layers, and model.num_layers is 1: set "
                  "model.num_layers, or model.layer_dropout=0")
  validate.one_of("model.merge", m.merge, lstm_lib.MERGES)
  if m.bidirectional and m.reverse:
    validate.fail("model.reverse", m.reverse, "must be False with model.bidirectional=True "
                  "(a bidirectional LSTM already reads both ways)")
  if m.dropout and not m.head_hidden:
    validate.fail("model.dropout", m.dropout,
                  "acts after the head's hidden Dense layers, and model.head_hidden is empty: "
                  "set model.head_hidden, or model.dropout=0")
  for field in ("kernel_init", "recurrent_init", "bias_init"):
    validate.one_of(f"model.{field}", m[field], lstm_lib.INITIALIZERS)
  validate.positive_float("model.kernel_gain", m.kernel_gain)
  validate.positive_float("model.recurrent_gain", m.recurrent_gain)
  validate.non_negative("model.chrono_tmax", m.chrono_tmax)
  validate.non_negative("model.unroll", m.unroll)
  if not isinstance(m.remat, int) or isinstance(m.remat, bool) or m.remat < -1:
    validate.fail("model.remat", m.remat,
                  "must be 0 (off), a chunk length > 0, or -1 (chosen by shape)")
  for field in ("reverse", "fused", "bidirectional"):
    if not isinstance(m[field], bool):
      validate.fail(f"model.{field}", m[field], "must be True or False")
  validate.one_of("model.kernel", m.kernel, selection.KERNELS)
  validate.one_of("model.dtype", m.dtype, DTYPES)
  validate.one_of("model.param_dtype", m.param_dtype, DTYPES)
  validate.one_of("model.precision", m.precision, numerics.PRECISIONS)


def patch_of(patch: int, head: str, steps: int | None) -> int:
  """The steps read as one for `model.patch`: itself, or for 0, as many as bring
  sequences of `steps` down to MAX_PATCHED_STEPS (one prediction a sequence; else 1)."""
  if patch:
    return patch
  if head != "last" or not steps:
    return 1
  return -(-steps // MAX_PATCHED_STEPS)


def from_config(m: ml_collections.ConfigDict, out_features: int, head: str,
                steps: int | None = None, level_features: int = 0) -> SequenceModel:
  """The model `config.model` describes, with a task's output size and head; `steps`,
  the longest training sequence, chooses `model.patch=0`'s patch; `level_features`:
  see `SequenceModel` (`model.view_dropout` acts on them)."""
  return SequenceModel(
      hidden=m.hidden, out_features=out_features, num_layers=m.num_layers, head=head,
      pool=m.pool, patch=patch_of(m.patch, head, steps), conv=tuple(m.conv),
      conv_kernels=tuple(m.conv_kernels),
      head_hidden=tuple(m.head_hidden), activation=m.activation,
      out_activation=m.out_activation, dropout=m.dropout, bidirectional=m.bidirectional,
      merge=m.merge, layer_dropout=m.layer_dropout, input_dropout=m.input_dropout,
      recurrent_dropout=m.recurrent_dropout, input_noise=m.get("input_noise", 0.0),
      input_scaling=m.get("input_scaling", 0.0), level_features=level_features,
      view_dropout=m.get("view_dropout", 0.0),
      kernel_init=lstm_lib.initializer(m.kernel_init, m.kernel_gain),
      recurrent_init=lstm_lib.initializer(m.recurrent_init, m.recurrent_gain),
      bias_init=lstm_lib.initializer(m.bias_init), forget_bias=m.forget_bias,
      chrono_tmax=m.chrono_tmax, reverse=m.reverse, unroll=m.unroll, remat=m.remat,
      fused=m.fused, kernel=m.kernel, dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype],
      precision=m.precision)
