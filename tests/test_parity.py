"""Numerical parity with torch.nn.LSTM and keras.layers.LSTM given the same weights.

The fixtures were made once by the real libraries (tests/fixtures/make_reference.py);
these tests need neither torch nor keras.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import lstm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TORCH = np.load(os.path.join(FIXTURES, "torch_lstm.npz"))
KERAS = np.load(os.path.join(FIXTURES, "keras_lstm.npz"))
ATOL = 1e-5  # float32 arithmetic ("highest") against the libraries' float32 CPU results


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("k", range(int(TORCH["num_cases"])))
def test_matches_torch(k):
  layers, batch, steps, _, hidden = TORCH[f"c{k}_meta"]
  params = {}
  for layer in range(layers):
    p = lambda name: TORCH[f"c{k}_l{layer}_{name}"]  # noqa: B023
    # torch: W [4H, in] applied as x @ W.T, two biases; gate order i, f, g, o as ours.
    params[f"layer{layer}"] = {"cell": {"input_kernel": p("w_ih").T,
                                        "recurrent_kernel": p("w_hh").T,
                                        "bias": p("b_ih") + p("b_hh")}}
  model = lstm.LSTM(int(hidden), int(layers), precision="highest")
  x = TORCH[f"c{k}_x"]
  assert x.shape == (batch, steps, TORCH[f"c{k}_meta"][3])
  (h, c), y = model.apply({"params": params}, jnp.asarray(x),
                          (jnp.asarray(TORCH[f"c{k}_h0"]), jnp.asarray(TORCH[f"c{k}_c0"])))
  _close(y, TORCH[f"c{k}_y"])
  _close(h, TORCH[f"c{k}_hn"])
  _close(c, TORCH[f"c{k}_cn"])


@pytest.mark.parametrize("k", range(int(KERAS["num_cases"])))
def test_matches_keras(k):
  *_, hidden, go_backwards, with_state = KERAS[f"c{k}_meta"]
  params = {"layer0": {"cell": {"input_kernel": KERAS[f"c{k}_kernel"],
                                "recurrent_kernel": KERAS[f"c{k}_recurrent_kernel"],
                                "bias": KERAS[f"c{k}_bias"]}}}
  model = lstm.LSTM(int(hidden), reverse=bool(go_backwards), precision="highest")
  carry = None
  if with_state:
    carry = (jnp.asarray(KERAS[f"c{k}_h0"])[None], jnp.asarray(KERAS[f"c{k}_c0"])[None])
  (h, c), y = model.apply({"params": params}, jnp.asarray(KERAS[f"c{k}_x"]), carry)
  expected_y = KERAS[f"c{k}_y"]
  if go_backwards:  # Keras returns outputs in processing order; ours stay aligned with inputs.
    expected_y = expected_y[:, ::-1]
  _close(y, expected_y)
  _close(h[0], KERAS[f"c{k}_h"])
  _close(c[0], KERAS[f"c{k}_c"])
  last = lstm.LSTM(int(hidden), reverse=bool(go_backwards), return_sequences=False,
                   precision="highest")
  _close(last.apply({"params": params}, jnp.asarray(KERAS[f"c{k}_x"]), carry)[1],
         KERAS[f"c{k}_h"])
