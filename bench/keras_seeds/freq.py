"""Keras 3 peer of `configs/freq.py:seed` (seed frequency_regression).

Read a sine sin(f * linspace(o, 2pi + o, 100)), output its frequency f.
Seed setup: f in 1..max_freq-1 (max_freq 10), 10 sines per frequency,
o ~ U(0, 1); LSTM(100) -> Dense(100, relu) -> Dropout(0.1) -> Dense(1, relu);
compile("adam", "mean_squared_error"); fit(epochs=200), Keras' default batch 32.
Test (as seqjax): MAE on 50 fresh sines per frequency (new random offsets).

  KERAS_BACKEND=jax python bench/keras_seeds/freq.py [--quick]

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

TIME_STEPS = 100


def create_sine(frequency, offset):
  return np.sin(frequency * np.linspace(offset, 2 * np.pi + offset, TIME_STEPS))


def sines(max_freq, per_freq):
  """The seed's data: each frequency 1..max_freq-1, `per_freq` times, random offsets."""
  y = list(range(1, max_freq)) * per_freq
  x = np.array([create_sine(f, np.random.uniform(0, 1)) for f in y])
  return x.reshape(-1, TIME_STEPS, 1), np.array(y, dtype=np.float64)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="1 epoch on tiny data (smoke test)")
  args = parser.parse_args()
  max_freq = 10
  per_freq, eval_per_freq, epochs = (2, 2, 1) if args.quick else (10, 50, 200)

  keras.utils.set_random_seed(0)
  train_x, train_y = sines(max_freq, per_freq)
  test_x, test_y = sines(max_freq, eval_per_freq)

  inputs = keras.Input(shape=(TIME_STEPS, 1), name="Input")
  lstm = keras.layers.LSTM(units=100)(inputs)
  hidden = keras.layers.Dense(units=100, activation="relu")(lstm)
  dropout = keras.layers.Dropout(rate=0.1)(hidden)
  output = keras.layers.Dense(units=1, activation="relu")(dropout)
  model = keras.Model(inputs, output)
  model.compile("adam", "mean_squared_error")
  model.fit(train_x, train_y, epochs=epochs, verbose=0)

  predicted = model.predict(test_x, batch_size=1024, verbose=0).reshape(-1)
  test = float(np.mean(np.abs(predicted - test_y)))
  wall_s = time.time() - T0
  print(json.dumps({"experiment": "freq", "metric": "mae", "test": test,
                    "wall_s": round(wall_s, 3), "keras": keras.__version__,
                    "backend": keras.backend.backend(), "train_size": len(train_y),
                    "eval_size": len(test_y), "epochs": epochs}))


if __name__ == "__main__":
  main()
