"""Stateful rollout and streaming with an explicit carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.model import lstm, rollout, sequence

MODEL = sequence.SequenceModel(hidden=6, num_layers=2, head="per_step", out_features=2,
                              precision="highest")


def _params(in_features=2):
  return MODEL.init(jax.random.key(0), jnp.ones((1, 3, in_features)))["params"]


def test_rollout_equals_single_steps_with_carry_by_hand():
  params = _params()
  prefix = jax.random.normal(jax.random.key(1), (3, 7, 2))
  preds = rollout.rollout(MODEL, params, prefix, 5)
  assert preds.shape == (3, 5, 2)

  carry = None
  for t in range(7):
    carry, y = MODEL.apply({"params": params}, prefix[:, t:t + 1], carry)
  by_hand = [y[:, 0]]
  for _ in range(4):
    carry, y = MODEL.apply({"params": params}, by_hand[-1][:, None], carry)
    by_hand.append(y[:, 0])
  np.testing.assert_allclose(preds, jnp.stack(by_hand, 1), atol=1e-5)


def test_streaming_chunks_equal_one_long_scan():
  params = _params()
  x = jax.random.normal(jax.random.key(2), (4, 30, 2))
  _, full = MODEL.apply({"params": params}, x)
  stream = rollout.Stream(MODEL, params, batch_size=4, num_layers=2, hidden=6)
  outs = [stream(x[:, a:b]) for a, b in [(0, 1), (1, 10), (10, 11), (11, 30)]]
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5)


def test_reset_gives_the_zero_carry():
  params = _params()
  stream = rollout.Stream(MODEL, params, batch_size=2, num_layers=2, hidden=6)
  x = jax.random.normal(jax.random.key(3), (2, 5, 2))
  first = stream(x)
  assert float(jnp.abs(stream.carry[0]).sum()) > 0
  stream.reset()
  for part in stream.carry:
    np.testing.assert_array_equal(part, jnp.zeros((2, 2, 6)))
  np.testing.assert_allclose(stream(x), first, atol=1e-6)


def test_rollout_compiles_once_per_shape():
  params = _params()
  prefix = jnp.ones((2, 4, 2))
  rollout.rollout(MODEL, params, prefix, 6)
  before = rollout.rollout._cache_size()
  for seed in range(3):
    p = jax.tree.map(lambda a: a + seed, params)  # new values, same shapes: no retrace
    rollout.rollout(MODEL, p, prefix * seed, 6)
  assert rollout.rollout._cache_size() == before


def test_free_run_feeds_predictions_back():
  params = _params()
  carry = lstm.zero_carry((2, 3), 6)
  first = jnp.ones((3, 2))
  _, ys = rollout.free_run(MODEL, params, carry, first, 3)
  c, y0 = MODEL.apply({"params": params}, first[:, None], carry)
  c, y1 = MODEL.apply({"params": params}, y0, c)
  np.testing.assert_allclose(ys[:, :2], jnp.concatenate([y0, y1], 1), atol=1e-5)


def test_stream_reads_its_layout_from_the_params_and_checks_a_given_one():
  params = _params()
  x = jax.random.normal(jax.random.key(4), (3, 7, 2))
  inferred = rollout.Stream(MODEL, {"params": params}, batch_size=3)
  given = rollout.Stream(MODEL, params, batch_size=3, num_layers=2, hidden=6)
  np.testing.assert_array_equal(inferred(x), given(x))
  assert inferred.carry[0].shape == (2, 3, 6)
  with pytest.raises(ValueError, match="num_layers=1, but the params hold an LSTM with "
                     "num_layers=2"):
    rollout.Stream(MODEL, params, batch_size=3, num_layers=1)
