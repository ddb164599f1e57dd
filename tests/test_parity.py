"""Numerical parity with torch.nn.LSTM and keras.layers.LSTM given the same weights.

Also with their bidirectional forms, torch.nn.LSTM(bidirectional=True) and (stacked)
keras.layers.Bidirectional(keras.layers.LSTM(...)).

The fixtures were made once by the real libraries (tests/fixtures/make_reference.py);
these tests need neither torch nor keras.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.model import lstm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TORCH = np.load(os.path.join(FIXTURES, "torch_lstm.npz"))
KERAS = np.load(os.path.join(FIXTURES, "keras_lstm.npz"))
TORCH_BI = np.load(os.path.join(FIXTURES, "torch_bilstm.npz"))
KERAS_BI = np.load(os.path.join(FIXTURES, "keras_bilstm.npz"))
MERGES = ("concat", "sum")  # the merge codes of keras_bilstm.npz
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


@pytest.mark.parametrize("k", range(int(TORCH_BI["num_cases"])))
def test_matches_torch_bidirectional(k):
  f = lambda name: TORCH_BI[f"c{k}_{name}"]
  layers, batch, steps, features, hidden = (int(v) for v in f("meta"))
  params = {}
  for layer in range(layers):
    for suffix in ("", "_reverse"):  # torch's weight_ih_l0_reverse is our layer0_reverse
      p = lambda name: f(f"l{layer}{suffix}_{name}")  # noqa: B023
      params[f"layer{layer}{suffix}"] = {"cell": {"input_kernel": p("w_ih").T,
                                                  "recurrent_kernel": p("w_hh").T,
                                                  "bias": p("b_ih") + p("b_hh")}}
  model = lstm.LSTM(hidden, layers, bidirectional=True, precision="highest")
  assert f("x").shape == (batch, steps, features)
  (h, c), y = model.apply({"params": params}, jnp.asarray(f("x")),
                          (jnp.asarray(f("h0")), jnp.asarray(f("c0"))))
  assert y.shape == (batch, steps, 2 * hidden) and h.shape == (2 * layers, batch, hidden)
  _close(y, f("y"))
  _close(h, f("hn"))
  _close(c, f("cn"))


@pytest.mark.parametrize("k", range(int(KERAS_BI["num_cases"])))
def test_matches_keras_bidirectional(k):
  f = lambda name: KERAS_BI[f"c{k}_{name}"]
  layers, batch, steps, features, hidden, merge, return_sequences, with_state = (
      int(v) for v in f("meta"))
  params = {}
  for layer in range(layers):
    for suffix, d in (("", "fwd"), ("_reverse", "bwd")):  # Keras' forward/backward_layer
      params[f"layer{layer}{suffix}"] = {"cell": {
          "input_kernel": f(f"l{layer}_{d}_kernel"),
          "recurrent_kernel": f(f"l{layer}_{d}_recurrent_kernel"),
          "bias": f(f"l{layer}_{d}_bias")}}
  model = lstm.LSTM(hidden, layers, bidirectional=True, merge=MERGES[merge],
                    return_sequences=bool(return_sequences), precision="highest")
  # Keras' states per layer [h_fwd, c_fwd, h_bwd, c_bwd]; ours (h, c), each [L * 2, B, H]
  # in the order layer 0 forward, layer 0 backward, layer 1 forward, ...
  to_carry = lambda name: tuple(
      jnp.asarray(np.concatenate([f(f"l{layer}_{name}")[j::2] for layer in range(layers)]))
      for j in (0, 1))
  carry = to_carry("initial_state") if with_state else None
  assert f("x").shape == (batch, steps, features)
  (h, c), y = model.apply({"params": params}, jnp.asarray(f("x")), carry)
  _close(y, f("y"))  # Bidirectional flips the backward outputs back: aligned with x, as ours
  h_expected, c_expected = to_carry("states")
  _close(h, h_expected)
  _close(c, c_expected)
