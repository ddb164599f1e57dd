"""Keras 3 peer of `configs/sine.py:seed` (seed sine_next_step_and_stateful_rollout).

Next-step prediction on random-phase sines, teacher forced.
Seed setup: 1000 training and 1000 validation sequences
sin(linspace(0, pi/2, 51) + U(0, 2pi)), input steps 0..49, target steps 1..50;
2x LSTM(32, return_sequences) -> TimeDistributed(Dense(1)); mse, adam;
fit(epochs=50, batch_size=32, validation_data=val).
Test (as seqjax): teacher-forced MSE over every step of the 1000 test
phases, i.e. the seed's own `val_loss` after the last epoch.

After the test metric (and outside wall_s) the seed's stateful rollout is
run the way seqjax reports it: the trained weights in a copy of the model that
carries its state, 256 test phases, a 50-step true warm-up, then 200 steps
each fed its own prediction; RMSE at horizons 10 / 50 / 100 / 200
(`rollout_rmse`).

  KERAS_BACKEND=jax python bench/keras_seeds/sine.py [--quick]

The last stdout line is one JSON object; wall_s counts from process start.
"""

import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

NUM_TIMESTEPS = 50
WIDTH = np.pi / 2.0
ROLLOUT_WARMUP, HORIZONS = 50, (10, 50, 100, 200)


def get_random_sine(num_samples=100, width=np.pi):
  return np.sin(np.linspace(0, width, num_samples) + (np.random.rand() * np.pi * 2))


def sequences(n):
  """The seed's data: n random phases, inputs steps 0..T-1, targets steps 1..T."""
  s = np.stack([get_random_sine(num_samples=NUM_TIMESTEPS + 1, width=WIDTH) for _ in range(n)])
  s = s.reshape((n, NUM_TIMESTEPS + 1, 1))
  return s[:, :-1, :], s[:, 1:, :]


def build():
  """The seed's model."""
  return keras.Sequential([
      keras.Input(shape=(NUM_TIMESTEPS, 1)),
      keras.layers.LSTM(32, return_sequences=True),
      keras.layers.LSTM(32, return_sequences=True),
      keras.layers.TimeDistributed(keras.layers.Dense(1)),
  ])


def build_generator():
  """The seed's rebuilt stateful copy, with the state passed in and out explicitly.

  Under the JAX backend `stateful=True` state survives only eager calls (predict_on_batch
  drops it), and an eager call per step is very slow; an explicit carry through a jitted
  `predict_on_batch` computes the same thing.
  """
  x = keras.Input(shape=(None, 1))
  states = [keras.Input(shape=(32,)) for _ in range(4)]
  h, *s1 = keras.layers.LSTM(32, return_sequences=True, return_state=True)(
      x, initial_state=states[:2])
  h, *s2 = keras.layers.LSTM(32, return_sequences=True, return_state=True)(
      h, initial_state=states[2:])
  y = keras.layers.TimeDistributed(keras.layers.Dense(1))(h)
  return keras.Model([x, *states], [y, *s1, *s2])


def rollout_rmse(model, n):
  """Free-running RMSE at each horizon (seqjax's sine `extra_evaluation` definition)."""
  steps = max(HORIZONS)
  dt = WIDTH / NUM_TIMESTEPS  # the seed's linspace(0, width, T + 1) advances width / T a step
  phases = np.random.uniform(0, 2 * np.pi, (n, 1))
  s = np.sin(phases + dt * np.arange(ROLLOUT_WARMUP + steps)[None, :])[..., None]
  prefix, truth = s[:, :ROLLOUT_WARMUP].astype("float32"), s[:, ROLLOUT_WARMUP:]
  gen = build_generator()
  gen.set_weights(model.get_weights())
  y, *states = gen.predict_on_batch([prefix] + [np.zeros((n, 32), "float32")] * 4)
  y = np.asarray(y)[:, -1:]  # predicts position W
  preds = [y]
  for _ in range(steps - 1):
    y, *states = gen.predict_on_batch([y, *states])
    y = np.asarray(y)
    preds.append(y)
  err = np.sqrt(np.mean((np.concatenate(preds, axis=1) - truth) ** 2, axis=(0, 2)))
  return {f"rmse@{h}": float(err[h - 1]) for h in HORIZONS}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="1 epoch on tiny data (smoke test)")
  args = parser.parse_args()
  num_samples, num_val, epochs, n_rollout = (64, 16, 1, 8) if args.quick else (1000, 1000, 50, 256)

  keras.utils.set_random_seed(0)
  train_x, train_y = sequences(num_samples)
  val_x, val_y = sequences(num_val)

  model = build()
  model.compile(loss="mean_squared_error", optimizer="adam")
  history = model.fit(train_x, train_y, epochs=epochs, validation_data=(val_x, val_y),
                      batch_size=32, verbose=0)
  test = float(history.history["val_loss"][-1])
  wall_s = time.time() - T0

  t = time.time()
  rmse = rollout_rmse(model, n_rollout)
  print(json.dumps({"experiment": "sine", "metric": "mse", "test": test,
                    "wall_s": round(wall_s, 3), "keras": keras.__version__,
                    "backend": keras.backend.backend(), "train_size": num_samples,
                    "eval_size": num_val, "epochs": epochs, "rollout_rmse": rmse,
                    "rollout_sequences": n_rollout, "rollout_s": round(time.time() - t, 3)}))


if __name__ == "__main__":
  main()
