"""The seqjax peer of the benchmark, and the registry of all peers.

seqjax runs what `seqjax.main` trains: `sequence.SequenceModel` (the hand-written
LSTM under `lax.scan`, input projection hoisted out of the loop, Dense head on
the last step), an optax Adam step jitted with the state donated. The other
peers (`others.py`) build the same function with Flax nn.RNN, torch and Keras.

"seqjax device loop" runs the same step `LOOP_STEPS` times in one call, in a
`lax.fori_loop`, as `seqjax.main` trains (`programs.make_train_loop`): its train
time is per step, without a Python dispatch and a host sync in every step.
"seqjax pallas" runs the recurrence as the fused Pallas kernel
(`model.kernel="pallas"`, `seqjax.model.kernels`), "seqjax pallas device loop" the
same in the device loop; they need an NVIDIA GPU (elsewhere the kernel is
interpreted, which says nothing about its speed).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.bench import others
from seqjax.bench.others import LEARNING_RATE, Closures, data
from seqjax.bench.shapes import Shape
from seqjax.model import lstm, sequence
from seqjax.runtime import sharding

LOOP_STEPS = 25


def seqjax_lstm(shape: Shape, seed: int = 0, device: str = "cpu", *, unroll: int | None = None,
                remat: int | None = None, dtype: str = "float32", precision: str = "highest",
                split_batch: bool = True, steps_per_call: int = 1,
                kernel: str = "xla") -> Closures:
  """seqjax's `(train_step, forward)` closures for `shape` (see `others` for the contract).

  `unroll`/`remat` default to `lstm.auto_unroll`/`lstm.auto_remat` for the shape and
  the platform, as `seqjax.main` chooses them; `dtype` and `precision` are the
  matmuls' compute dtype and precision (`model.dtype`, `model.precision`).
  `split_batch`: like `seqjax.main`, split the batch over the devices of the
  default backend that divide it and leave each enough work (on CPU, the cores
  when the bench made them devices, `mesh.cpu_devices`); False: one device.
  `steps_per_call`: steps run by one `train_step()` call, in a device-side
  loop; the closure's `steps` attribute says how many (the timing divides).
  `kernel`: `model.kernel` ("xla", "pallas" or "auto").
  """
  del device  # JAX places on its default device (set JAX_PLATFORMS to choose)
  devices = jax.devices()
  count = sharding.auto_cpu_devices(shape.batch, len(devices), shape.hidden) if split_batch else 1
  mesh = Mesh(np.asarray(devices[:count]), (sharding.DATA,))
  rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(sharding.DATA))
  x_np, y_np = data(shape, seed)
  x, y = jax.device_put(x_np, split), jax.device_put(y_np, split)
  model = sequence.SequenceModel(
      hidden=shape.hidden, out_features=1, num_layers=shape.layers, head="last",
      unroll=lstm.auto_unroll(shape.time, shape.batch, shape.hidden) if unroll is None else unroll,
      remat=lstm.auto_remat(shape.time, shape.batch, shape.hidden) if remat is None else remat,
      dtype=jnp.dtype(dtype), precision=precision, kernel=kernel)
  params = jax.jit(model.init, out_shardings=rep)(jax.random.key(seed), x_np[:1])["params"]
  tx = optax.adam(LEARNING_RATE)

  def loss_fn(params, x, y):
    return jnp.mean((model.apply({"params": params}, x)[1] - y) ** 2)

  def one_step(state, x, y):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @functools.partial(jax.jit, donate_argnums=0, out_shardings=(rep, rep))
  def step(state, x, y):
    if steps_per_call == 1:
      return one_step(state, x, y)
    return jax.lax.fori_loop(0, steps_per_call, lambda _, sl: one_step(sl[0], x, y),
                             (state, jnp.zeros((), jnp.float32)))

  predict = jax.jit(lambda params, x: model.apply({"params": params}, x)[1])
  state = [(params, jax.jit(tx.init, out_shardings=rep)(params))]

  def train_step():
    state[0], loss = step(state[0], x, y)
    jax.block_until_ready(loss)

  def forward():  # also returns the prediction [B, 1] (for tests)
    return jax.block_until_ready(predict(state[0][0], x))

  train_step.steps = steps_per_call
  return train_step, forward


PEERS = {"seqjax": seqjax_lstm,
         "seqjax 1 device": functools.partial(seqjax_lstm, split_batch=False),
         "seqjax device loop": functools.partial(seqjax_lstm, steps_per_call=LOOP_STEPS),
         "seqjax pallas": functools.partial(seqjax_lstm, kernel="pallas"),
         "seqjax pallas device loop": functools.partial(seqjax_lstm, kernel="pallas",
                                                        steps_per_call=LOOP_STEPS),
         **others.PEERS}


def skip_reason(name: str) -> str | None:
  """Why peer `name` cannot run here, or None."""
  if name.startswith("seqjax pallas") and jax.default_backend() != "gpu":
    return "the Pallas kernel needs an NVIDIA GPU (elsewhere it is only interpreted)"
  if not name.startswith("seqjax") and not others.available(name):
    return "not installed (pip install -e '.[bench]')"
  return None
