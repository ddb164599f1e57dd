"""Tier 1: the hand-written VJP of the recurrence against JAX's autodiff of the same scan."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.model import lstm, recurrence

T, B, H = 9, 3, 5


def _inputs(dtype):
  keys = jax.random.split(jax.random.key(0), 5)
  w_h = 0.5 * jax.random.normal(keys[0], (H, 4 * H), dtype)
  gx = jax.random.normal(keys[1], (T, B, 4 * H), dtype)
  carry = (jax.random.normal(keys[2], (B, H), dtype), jax.random.normal(keys[3], (B, H), dtype))
  mask = jax.random.bernoulli(keys[4], 0.7, (T, B))
  return w_h, gx, carry, mask


def _grads(fused, masked, remat, unroll, dtype, compute_dtype):
  """`masked`: False, True (a random mask) or a [T, B] mask."""
  w_h, gx, carry, mask = _inputs(dtype)
  mask = masked if not isinstance(masked, bool) else mask if masked else None

  def loss(w_h, gx, carry):
    (h, c), ys = lstm.scan_layer(w_h, gx, carry, mask, remat=remat,
                                 unroll=unroll, dtype=compute_dtype, precision="highest",
                                 fused=fused)
    # every output and both final carries reach the loss, with different weights
    return jnp.sum(jnp.sin(ys) * jnp.arange(T)[:, None, None]) + jnp.sum(h * 2) + jnp.sum(c ** 2)

  return jax.value_and_grad(loss, argnums=(0, 1, 2))(w_h, gx, carry)


@pytest.mark.parametrize("masked,remat,unroll", [
    (False, 0, 1), (True, 4, 3), pytest.param(True, 0, 1, marks=pytest.mark.slow),
    pytest.param(False, 4, 1, marks=pytest.mark.slow),
    pytest.param(False, 0, 4, marks=pytest.mark.slow)])
def test_fused_vjp_equals_autodiff_float64(masked, remat, unroll):
  with jax.enable_x64(True):
    args = (masked, remat, unroll, jnp.float64, jnp.float64)
    (l1, g1), (l2, g2) = _grads(False, *args), _grads(True, *args)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), g1, g2)


def test_fused_vjp_bfloat16_matmuls_close_to_autodiff():
  args = (True, 0, 1, jnp.float32, jnp.bfloat16)
  (l1, g1), (l2, g2) = _grads(False, *args), _grads(True, *args)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  # Both round the same matmul operands to bfloat16, but the backward GEMMs see
  # them in another order: about 4 bfloat16 epsilons (2^-7 each) apart.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=3e-2, atol=3e-2), g1, g2)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g2))


def test_fused_forward_is_the_autodiff_forward():
  w_h, gx, carry, mask = _inputs(jnp.float32)
  for m in (None, mask):
    a = recurrence.scan(w_h, gx, carry, m, precision="highest", fused=True)
    b = recurrence.scan(w_h, gx, carry, m, precision="highest", fused=False)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), a, b)


def test_gate_activations_are_sigmoid_and_tanh():
  z = jnp.linspace(-12.0, 12.0, 4 * 7).reshape(1, -1) * jnp.ones((2, 1))
  i, f, g, o = jnp.split(recurrence.gate_activations(z), 4, axis=-1)
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  for a, x in ((i, zi), (f, zf), (o, zo)):
    np.testing.assert_allclose(a, jax.nn.sigmoid(x), atol=1e-6)
  np.testing.assert_allclose(g, jnp.tanh(zg), atol=1e-6)


def test_fused_vjp_under_vmap_matches_per_model_grads():
  """The sweep runner vmaps whole models: the custom VJP must batch."""
  w_h, gx, carry, _ = _inputs(jnp.float32)
  ws = jnp.stack([w_h, 0.5 * w_h, -w_h])
  loss = lambda w: jnp.sum(recurrence.scan(w, gx, carry, precision="highest")[1] ** 2)
  batched = jax.vmap(jax.grad(loss))(ws)
  for k in range(3):
    np.testing.assert_allclose(batched[k], jax.grad(loss)(ws[k]), rtol=1e-5, atol=1e-6)


def test_layer_without_fused_vjp_supports_forward_mode():
  x = jax.random.normal(jax.random.key(1), (2, 6, 3))
  model = lstm.LSTM(4, 2, fused=False, precision="highest")
  params = model.init(jax.random.key(0), x)
  f = lambda x: model.apply(params, x)[1]
  _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
  _, vjp = jax.vjp(lambda x: lstm.LSTM(4, 2, precision="highest").apply(params, x)[1], x)
  # <J 1, 1> from forward mode equals <1, J^T 1> from the fused reverse mode
  np.testing.assert_allclose(jnp.sum(tangent), jnp.sum(vjp(jnp.ones((2, 6, 4)))[0]), rtol=1e-4)


@pytest.mark.parametrize("lengths,unroll", [
    ((4, 6, 2), 1), ((2, 3, 1), 4), ((0, 0, 0), 3), ((4, 6, 2), 3), ((4, 5, 2), 2),
    ((3, 9, 1), 2)])
def test_steps_past_the_batchs_longest_are_skipped_and_change_nothing(lengths, unroll,
                                                                        monkeypatch):
  """With every sequence shorter than T, the fused path runs up to the batch's longest
  only (blocks of `unroll` and a tail), and equals autodiff of the whole masked scan."""
  mask = jnp.arange(T)[:, None] < jnp.asarray(lengths)[None, :]  # [T, B]
  mask = mask.at[1, 0].set(False)  # a gap inside a sequence, as a Keras mask may have
  calls, scan_active = [], recurrence.scan_active
  monkeypatch.setattr(recurrence, "scan_active",
                      lambda *a, **k: (calls.append(k.get("reverse", False)),
                                       scan_active(*a, **k))[1])
  with jax.enable_x64(True):
    (l1, g1), (l2, g2) = (_grads(fused, mask, 0, unroll, jnp.float64, jnp.float64)
                          for fused in (False, True))
  np.testing.assert_allclose(l1, l2, rtol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), g1, g2)
  assert int(recurrence.active_steps(mask)) == max(lengths)
  if recurrence.skips_padding():  # the fused forward and backward went through it
    assert sorted(calls) == [False, True]


def test_a_second_derivative_through_the_fused_path_runs_the_whole_scan():
  """JAX cannot reverse-differentiate a loop of traced length: a gradient of a gradient
  (under jit, the mask traced) equals autodiff's."""
  w_h, gx, carry, _ = _inputs(jnp.float32)
  mask = jnp.arange(T)[:, None] < jnp.asarray([4, 6, 2])[None, :]

  def norm(fused, w_h, mask):
    grad = jax.grad(lambda w: jnp.sum(recurrence.scan(w, gx, carry, mask, precision="highest",
                                                      fused=fused)[1] ** 2))
    return jnp.sum(grad(w_h) ** 2)

  a, b = (jax.jit(jax.grad(functools.partial(norm, fused)))(w_h, mask) for fused in (False, True))
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_masked_scan_of_no_steps():
  w_h, gx, carry, _ = _inputs(jnp.float32)
  mask = jnp.zeros((0, B), bool)
  (h, c), ys = recurrence.scan(w_h, gx[:0], carry, mask)
  assert ys.shape == (0, B, H) and int(recurrence.active_steps(mask)) == 0
  np.testing.assert_array_equal(h, carry[0])


def _counted(steps):
  """A body that leaves its state on padding (as the LSTM's does) and counts every step
  it runs, and its inputs x (beside a `valid` [T] of the caller's)."""

  def body(carry, xs):
    count, acc = carry
    x, valid = xs
    new = jnp.where(valid, acc * 0.5 + x, acc)
    return (count + 1, new), jnp.where(valid, new * 3.0, -1.0)

  return body, jnp.arange(1.0, steps + 1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("active,unroll,ran", [(5, 1, 5), (5, 4, 8 + 2), (0, 4, 2), (9, 4, 10),
                                               (3, 5, 5 + 0), (7, 10, 10), (4, True, 10)])
def test_scan_active_runs_the_blocks_that_hold_active_steps_and_the_tail(active, unroll, ran,
                                                                         reverse):
  """Of T=10 steps: ceil(active/unroll) blocks of `unroll`, the last T % unroll steps
  always, all of them when one block would hold T; the carry and outputs are the whole
  scan's, in either direction."""
  steps = 10
  body, x = _counted(steps)
  valid = (jnp.arange(steps) < active) & (jnp.arange(steps) != 1)  # a gap too
  (count, acc), ys = recurrence.scan_active(body, (jnp.int32(0), 0.0), (x, valid), -1.0,
                                            jnp.int32(active), unroll, reverse=reverse)
  (_, want_acc), want_ys = jax.lax.scan(body, (jnp.int32(0), 0.0), (x, valid), reverse=reverse)
  assert int(count) == ran
  np.testing.assert_array_equal(acc, want_acc)
  np.testing.assert_array_equal(ys, want_ys)


def test_under_vmap_every_member_runs_the_longest_members_steps():
  """A trip count per member would make JAX select the whole loop state at every trip:
  the members share the longest one (padding for the others), and keep their results."""
  steps = 12
  body, x = _counted(steps)
  actives = jnp.asarray([2, 7, 4])

  def run(active):
    valid = jnp.arange(steps) < active
    return recurrence.scan_active(body, (jnp.int32(0), 0.0), (x, valid), -1.0, active, 1)

  (counts, accs), ys = jax.vmap(run)(actives)
  np.testing.assert_array_equal(counts, [7, 7, 7])
  for i, active in enumerate(actives):
    (_, acc), want = run(active)
    np.testing.assert_array_equal(accs[i], acc)
    np.testing.assert_array_equal(ys[i], want)
