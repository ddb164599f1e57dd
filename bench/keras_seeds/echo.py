"""Keras 3 peer of `configs/echo.py:seed` (seed echo_random_integers).

One-hot random integers in [0, 100); each example is a window of the last 5
values, the label the value before the window's last one.
Seed setup: per sequence, 25 fresh values -> 20 windows; LSTM(50, stateful,
batch_input_shape=(5, 5, 100)) -> Dense(100, softmax); categorical_crossentropy,
adam, metrics acc; 2000 times: fit(epochs=1, batch_size=5, shuffle=False) on
one sequence's 20 windows, then reset the states.
Test (as seqjax): accuracy on the 20 windows of each of 500 fresh
sequences, each window from a zero state (the trained weights in a stateless
copy of the model, so the test set is one batched predict).

Note: under Keras 3's JAX backend, fit() does not carry a stateful RNN's state
between batches (the state is not a tracked variable of the jitted train step),
so this trains exactly as a stateless LSTM would; the seed's windows hold the
answer, so the result does not depend on it.

  KERAS_BACKEND=jax python bench/keras_seeds/echo.py [--quick]

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

N_UNIQUE, LENGTH, WINDOW = 100, 25, 5


def generate_data(n=1):
  """The seed's generate_data for n sequences: x [n * 20, 5, 100] one-hot, y [n * 20] ints.

  Row j of a sequence s is the window s[j : j + 5] and its label s[j + 3], as the
  seed's pandas shifts (dropping the first 5 rows) and y = encoded[4:-1] give.
  """
  s = np.random.randint(0, N_UNIQUE, size=(n, LENGTH))
  idx = np.arange(1, LENGTH - WINDOW + 1)[:, None] + np.arange(WINDOW)[None, :]  # [20, 5]
  w = s[:, idx]
  x = np.eye(N_UNIQUE, dtype=np.float32)[w].reshape(-1, WINDOW, N_UNIQUE)
  return x, w[..., -2].reshape(-1)


def build(batch_shape, stateful):
  return keras.Sequential([
      keras.Input(batch_shape=batch_shape),
      keras.layers.LSTM(50, stateful=stateful),
      keras.layers.Dense(N_UNIQUE, activation="softmax"),
  ])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="10 sequences (smoke test)")
  args = parser.parse_args()
  n_sequences, eval_size = (10, 8) if args.quick else (2000, 500)

  keras.utils.set_random_seed(0)
  model = build((5, WINDOW, N_UNIQUE), stateful=True)
  model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
  one_hot = np.eye(N_UNIQUE, dtype=np.float32)
  for _ in range(n_sequences):
    x, y = generate_data()
    model.fit(x, one_hot[y], epochs=1, batch_size=5, verbose=0, shuffle=False)
    for layer in model.layers:  # Keras 3 has no Model.reset_states()
      if getattr(layer, "stateful", False):
        layer.reset_state()

  x, y = generate_data(eval_size)
  evaluator = build((None, WINDOW, N_UNIQUE), stateful=False)
  evaluator.set_weights(model.get_weights())
  predicted = np.argmax(evaluator.predict(x, batch_size=1024, verbose=0), axis=-1)
  test = float(np.mean(predicted == y))
  wall_s = time.time() - T0
  print(json.dumps({"experiment": "echo", "metric": "accuracy", "test": test,
                    "wall_s": round(wall_s, 3), "keras": keras.__version__,
                    "backend": keras.backend.backend(), "train_sequences": n_sequences,
                    "eval_windows": len(y)}))


if __name__ == "__main__":
  main()
