"""Benchmark peers: the same LSTM regressor written with other libraries.

Every peer builds the same function and training step, in its library's usual way:

  x [B, T, I] -> `layers` stacked LSTMs of width H (batch first) -> the last
  step's output [B, H] -> Dense(H -> 1) -> prediction [B, 1];
  loss = mean squared error to y [B, 1]; optimizer Adam(learning_rate=1e-3)
  with the library's default betas and epsilon (Keras' epsilon is 1e-7, the
  others' 1e-8).

Shape letters: B batch, T time steps, I input features, H hidden units.

A builder `peer(shape, seed=0, device="cpu")` returns `(train_step, forward)`,
two zero-argument closures over fixed random inputs made once at build time:

  train_step(): one full training step (forward, backward, Adam update). The
    updated parameters and optimizer state are kept for the next call. Blocks
    until the step is computed.
  forward(): the forward pass alone, without gradients. Blocks until the
    prediction is computed.

The first call of each closure includes compilation (JAX, Keras) or warm-up
(torch); time the calls after it. All peers use the same inputs for a given
shape and seed (`data`), but each initializes its parameters its own way.

torch and Keras are optional: they are imported only when their builder runs,
and `available(name)` tells, without importing anything, whether a peer's
libraries are installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from seqjax.bench.shapes import Shape

Closures = tuple[Callable[[], None], Callable[[], None]]

LEARNING_RATE = 1e-3


def data(shape: Shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns the fixed inputs of a peer, the same for every peer.

  Args:
    shape: the problem size.
    seed: seeds the inputs (not the parameters).

  Returns:
    `(x, y)`: x [B, T, I] and y [B, 1], float32 standard normal.
  """
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((shape.batch, shape.time, shape.inputs), dtype=np.float32)
  y = rng.standard_normal((shape.batch, 1), dtype=np.float32)
  return x, y


def _jax_device(device: str):
  """Returns the `jax.Device` named like torch does: "cpu", "cuda" or "cuda:1" ("gpu" too)."""
  import jax

  kind, _, index = device.partition(":")
  platforms = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}
  if kind not in platforms:
    raise ValueError(f"device: unknown {device!r}; allowed: cpu, cuda, cuda:N, gpu, tpu")
  return jax.devices(platforms[kind])[int(index or 0)]


def flax_rnn(shape: Shape, seed: int = 0, device: str = "cpu") -> Closures:
  """Flax linen: `nn.RNN(nn.OptimizedLSTMCell(H))` per layer, optax.adam, `jax.jit`.

  The train step is jitted with the state `(params, opt_state)` donated; the
  state lives in this closure and is replaced by each step's result.

  Args:
    shape: the problem size; x is [B, T, I].
    seed: seeds the inputs and the parameter initialization.
    device: "cpu" or "cuda" (or "cuda:N").

  Returns:
    `(train_step, forward)`, see the module docstring.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  class Net(nn.Module):
    """[B, T, I] -> stacked `nn.RNN(OptimizedLSTMCell)` -> last step -> Dense -> [B, 1]."""

    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x):
      for _ in range(self.layers):
        x = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x)  # [B, T, H]
      return nn.Dense(1)(x[:, -1])

  dev = _jax_device(device)
  x_np, y_np = data(shape, seed)
  x, y = jax.device_put(x_np, dev), jax.device_put(y_np, dev)
  model = Net(shape.hidden, shape.layers)
  tx = optax.adam(LEARNING_RATE)
  with jax.default_device(dev):
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), x)
    state = [(params, jax.jit(tx.init)(params))]

  def loss_fn(params, x, y):
    return jnp.mean((model.apply(params, x) - y) ** 2)

  def step(state, x, y):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  step = jax.jit(step, donate_argnums=0)
  predict = jax.jit(model.apply)

  def train_step() -> None:
    state[0], loss = step(state[0], x, y)
    jax.block_until_ready((state[0], loss))

  def forward() -> None:
    jax.block_until_ready(predict(state[0][0], x))

  return train_step, forward


def torch_lstm(shape: Shape, seed: int = 0, device: str = "cpu") -> Closures:
  """PyTorch: `nn.LSTM(I, H, num_layers=L, batch_first=True)` + `nn.Linear`, `optim.Adam`.

  On "cuda" `nn.LSTM` runs cuDNN's fused kernels. The thread count is torch's
  default. `forward` runs in eval mode under `torch.no_grad()`, `train_step`
  in train mode (the model has no dropout, so the two modes compute the same
  function; on cuDNN eval mode skips the backward's reserve space).

  Args:
    shape: the problem size; x is [B, T, I].
    seed: seeds the inputs and the parameter initialization.
    device: "cpu", "cuda" or "cuda:N".

  Returns:
    `(train_step, forward)`, see the module docstring.

  Raises:
    ImportError: torch is not installed.
  """
  import torch
  from torch import nn

  class Net(nn.Module):
    """[B, T, I] -> `nn.LSTM` -> last step -> `nn.Linear` -> [B, 1]."""

    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(shape.inputs, shape.hidden, num_layers=shape.layers, batch_first=True)
      self.dense = nn.Linear(shape.hidden, 1)

    def forward(self, x):
      out, _ = self.lstm(x)  # [B, T, H]; the final carry (h_n, c_n) is dropped
      return self.dense(out[:, -1])

  dev = torch.device(device)
  torch.manual_seed(seed)
  x_np, y_np = data(shape, seed)
  x, y = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
  net = Net().to(dev)
  opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
  loss_fn = nn.MSELoss()
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

  def train_step() -> None:
    net.train()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    sync()

  def forward() -> None:
    net.eval()
    with torch.no_grad():
      net(x)
    sync()

  return train_step, forward


def keras_lstm(shape: Shape, seed: int = 0, device: str = "cpu") -> Closures:
  """Keras 3 on the JAX backend: `Sequential([LSTM] * L + [Dense(1)])`, `train_on_batch`.

  Sets KERAS_BACKEND=jax unless it is already set, before importing Keras.
  `train_on_batch` is what Keras users run: a jitted step (compiled on the
  first call, state donated) plus Keras' copy of the new state back into its
  variables, and a host transfer of the loss. `forward` is
  `predict_on_batch`, Keras' fast path: it runs the jitted predict function,
  while `model(x, training=False)` runs the layers eagerly, op by op, on JAX.
  `keras.utils.set_random_seed` also seeds Python's and NumPy's global RNGs.

  Args:
    shape: the problem size; x is [B, T, I].
    seed: seeds the inputs and the parameter initialization.
    device: "cpu", "cuda" or "cuda:N".

  Returns:
    `(train_step, forward)`, see the module docstring.

  Raises:
    ImportError: keras is not installed.
    RuntimeError: Keras was already imported with a backend other than JAX.
  """
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import jax
  import keras

  if keras.backend.backend() != "jax":
    raise RuntimeError(
        f"keras_lstm: Keras runs on the {keras.backend.backend()!r} backend, this peer needs "
        "'jax': set KERAS_BACKEND=jax before anything imports keras")

  dev = _jax_device(device)
  x_np, y_np = data(shape, seed)
  with jax.default_device(dev):
    keras.utils.set_random_seed(seed)
    lstms = [keras.layers.LSTM(shape.hidden, return_sequences=i < shape.layers - 1)
             for i in range(shape.layers)]
    model = keras.Sequential([keras.Input((shape.time, shape.inputs)), *lstms,
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss="mse")
  x, y = jax.device_put(x_np, dev), jax.device_put(y_np, dev)

  def train_step() -> None:
    with jax.default_device(dev):
      model.train_on_batch(x, y)  # returns the loss as a Python float: blocks

  def forward() -> None:
    with jax.default_device(dev):
      model.predict_on_batch(x)  # returns NumPy: blocks

  return train_step, forward


PEERS: dict[str, Callable[..., Closures]] = {
    "flax nn.RNN": flax_rnn,
    "torch nn.LSTM": torch_lstm,
    "keras LSTM": keras_lstm,
}

# Top-level modules each peer imports.
_REQUIRES = {
    "flax nn.RNN": ("jax", "flax", "optax"),
    "torch nn.LSTM": ("torch",),
    "keras LSTM": ("jax", "keras"),
}


def _installed(module: str) -> bool:
  if module in sys.modules:
    return True
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def available(name: str) -> bool:
  """Tells whether the libraries of peer `name` (a key of `PEERS`) are installed.

  Looks them up with `importlib.util.find_spec`, importing nothing.
  """
  if name not in _REQUIRES:
    raise ValueError(f"available: unknown peer {name!r}; allowed: {', '.join(PEERS)}")
  return all(_installed(m) for m in _REQUIRES[name])
