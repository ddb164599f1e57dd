"""Keras 3 peer of `configs/mean.py:seed` (seed mean_of_step_sequence).

Read a step sequence 0..0 1..1 of length L, output its mean.
Seed setup: SEQ_LEN=2000, N_SAMPLES=50: the rows of triu(ones(L + 1, L)),
shuffled; the first 50, of which the last 10% (5) are the seed's test set and
45 train. Masking(0) -> LSTM(10, tanh, kernel_initializer=Orthogonal(gain=0.01))
-> Dense(1, relu); adam, mse, metrics mae;
fit(epochs=50, batch_size=1, shuffle=True, validation_data=test).
Test (as seqjax): MAE on every sequence outside the 45 trained on
(2001 - 45 = 1956 sequences, the seed's 5 test sequences among them).

  KERAS_BACKEND=jax python bench/keras_seeds/mean.py [--quick]

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="1 epoch on tiny data (smoke test)")
  args = parser.parse_args()
  seq_len, n_samples, epochs, eval_size = (50, 22, 1, 16) if args.quick else (2000, 50, 50, 2000)

  keras.utils.set_random_seed(0)
  # The seed's data code (`ns` is unused there too; drawing it keeps the seed's random stream).
  n_test_samples = int(0.1 * n_samples)
  _ns = np.random.randint(0, seq_len, size=(n_samples,))
  all_xs = np.triu(np.ones(shape=(seq_len + 1, seq_len)))
  np.random.shuffle(all_xs)
  xs = all_xs[:n_samples, ...]
  ys = xs.mean(axis=1)
  xs = xs.reshape(n_samples, seq_len, -1)
  train_x, test_x = xs[:-n_test_samples], xs[-n_test_samples:]
  train_y, test_y = ys[:-n_test_samples], ys[-n_test_samples:]
  # Held out: every sequence not trained on (seqjax's `mean` eval set, capped at eval_size).
  n_train = n_samples - n_test_samples
  held_x = all_xs[n_train:][:eval_size].reshape(-1, seq_len, 1)
  held_y = all_xs[n_train:][:eval_size].mean(axis=1)

  model = keras.Sequential([
      keras.Input(shape=(train_x.shape[1], train_x.shape[2])),
      keras.layers.Masking(mask_value=0.00),
      keras.layers.LSTM(10, activation="tanh",
                        kernel_initializer=keras.initializers.Orthogonal(gain=0.01)),
      keras.layers.Dense(1, activation="relu"),
  ])
  model.compile(optimizer=keras.optimizers.Adam(), loss="mse", metrics=["mae"])
  model.fit(train_x, train_y, epochs=epochs, validation_data=(test_x, test_y), verbose=0,
            batch_size=1, shuffle=True)

  predicted = model.predict(held_x, batch_size=512, verbose=0).reshape(-1)
  test = float(np.mean(np.abs(predicted - held_y)))
  wall_s = time.time() - T0
  print(json.dumps({"experiment": "mean", "metric": "mae", "test": test,
                    "wall_s": round(wall_s, 3), "keras": keras.__version__,
                    "backend": keras.backend.backend(), "seq_len": seq_len,
                    "train_size": len(train_y), "eval_size": len(held_y), "epochs": epochs,
                    "pred_std": float(np.std(predicted))}))


if __name__ == "__main__":
  main()
