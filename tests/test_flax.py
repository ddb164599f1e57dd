"""The LSTM as a Flax citizen: Flax's cell protocol and wrappers, NNX modules,
bidirectional stacks, dropout, forward-mode differentiation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import seqjax
from seqjax.model import lstm, recurrence, rollout
from seqjax.model import nnx as snnx

# Same parameters, the same float32 arithmetic ("highest") along different code paths:
# a few float32 roundings apart.
ATOL = 1e-6
B, T, F, H = 3, 7, 2, 5  # batch, time, features, hidden
X = jax.random.normal(jax.random.key(1), (B, T, F))
LENGTHS = jnp.array([7, 3, 5])
VALID = (jnp.arange(T)[None, :] < LENGTHS[:, None])[..., None]  # [B, T, 1]


def _close(a, b, atol=ATOL):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def _cell():
  return lstm.LSTMCell(H, precision="highest")


def _layer_params(rnn_params):
  return {"cell": rnn_params["cell"]}


# --- Flax's cell protocol -------------------------------------------------------------


def test_the_cell_is_a_flax_cell_with_its_input_size_inferred():
  cell = _cell()
  assert isinstance(cell, nn.RNNCellBase) and cell.num_feature_axes == 1
  carry = cell.initialize_carry(jax.random.key(0), (B, F))
  assert [a.shape for a in carry] == [(B, H), (B, H)]
  params = cell.init(jax.random.key(0), carry, X[:, 0])["params"]
  assert params["input_kernel"].shape == (F, 4 * H)
  with pytest.raises(ValueError, match="in_features is 4"):
    lstm.LSTMCell(H, 4).init(jax.random.key(0), carry, X[:, 0])


@pytest.mark.parametrize("reverse,keep_order", [(False, False), (True, True), (True, False)])
def test_nn_rnn_runs_the_cell_as_the_layer_does(reverse, keep_order):
  """`nn.RNN` with seq_lengths, return_carry, reverse and keep_order equals `LSTMLayer`."""
  rnn = nn.RNN(_cell(), return_carry=True)
  params = rnn.init(jax.random.key(0), X, seq_lengths=LENGTHS)["params"]
  carry, ys = rnn.apply({"params": params}, X, seq_lengths=LENGTHS, reverse=reverse,
                        keep_order=keep_order)
  layer = lstm.LSTMLayer(H, reverse=reverse, precision="highest")
  ref_carry, ref = layer.apply({"params": _layer_params(params)}, X, lengths=LENGTHS)
  if reverse and not keep_order:  # Flax returns the outputs in processing order
    ref = jax.vmap(lambda y, n: jnp.roll(y[::-1], n - T, axis=0))(ref, LENGTHS)
  _close(jnp.where(VALID, ys, 0.0), ref)  # nn.RNN leaves padded outputs unspecified
  _close(carry[0], ref_carry[0])
  _close(carry[1], ref_carry[1])


def test_nn_bidirectional_equals_the_bidirectional_lstm():
  bi = nn.Bidirectional(nn.RNN(_cell()), nn.RNN(_cell()), return_carry=True)
  params = bi.init(jax.random.key(0), X, seq_lengths=LENGTHS)["params"]
  (fwd, bwd), ys = bi.apply({"params": params}, X, seq_lengths=LENGTHS)
  ours = lstm.LSTM(H, bidirectional=True, precision="highest")
  tree = {"layer0": _layer_params(params["forward_rnn"]),
          "layer0_reverse": _layer_params(params["backward_rnn"])}
  (h, c), ref = ours.apply({"params": tree}, X, lengths=LENGTHS)
  _close(jnp.where(VALID, ys, 0.0), ref)
  _close(jnp.stack([fwd[0], bwd[0]]), h)
  _close(jnp.stack([fwd[1], bwd[1]]), c)


def test_the_cell_equals_flax_optimized_lstm_cell_given_the_same_weights():
  """Flax's split biases and per-gate Dense kernels hold the same numbers; its carry is (c, h)."""
  ours = _cell()
  carry = ours.initialize_carry(jax.random.key(0), (B, F))
  params = ours.init(jax.random.key(0), carry, X[:, 0])["params"]
  split = lambda a: jnp.split(a, 4, axis=-1)  # noqa: E731
  wi, wh, b = split(params["input_kernel"]), split(params["recurrent_kernel"]), split(
      params["bias"])
  flax_params = {}
  for gate, k in zip("ifgo", range(4), strict=True):
    flax_params[f"i{gate}"] = {"kernel": wi[k]}
    flax_params[f"h{gate}"] = {"kernel": wh[k], "bias": b[k]}
  flax_rnn = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)
  with jax.default_matmul_precision("highest"):
    (c, h), ys = flax_rnn.apply({"params": {"cell": flax_params}}, X)
  (h2, c2), ys2 = lstm.LSTMLayer(H, precision="highest").apply(
      {"params": {"cell": params}}, X)
  _close(ys, ys2)
  _close(h, h2)
  _close(c, c2)


# --- NNX -----------------------------------------------------------------------------


NNX_CASES = [
    pytest.param({"num_layers": 2}, marks=pytest.mark.slow),
    {"num_layers": 2, "bidirectional": True},
    pytest.param({"bidirectional": True, "merge": "sum", "return_sequences": False},
                 marks=pytest.mark.slow),
    {"reverse": True, "remat": 3, "unroll": 2},
]


@pytest.mark.parametrize("options", NNX_CASES, ids=lambda o: ",".join(o))
def test_nnx_lstm_equals_the_linen_one_given_the_same_parameters(options):
  linen = lstm.LSTM(H, precision="highest", **options)
  params = linen.init(jax.random.key(0), X)["params"]
  model = snnx.LSTM(F, H, rngs=nnx.Rngs(1), precision="highest", **options)
  snnx.load_linen_params(model, params)
  jax.tree.map(np.testing.assert_array_equal, snnx.linen_params(model), params)
  (h, c), y = model(X, lengths=LENGTHS)
  (h2, c2), y2 = linen.apply({"params": params}, X, lengths=LENGTHS)
  _close(y, y2)
  _close(h, h2)
  _close(c, c2)
  grads = nnx.grad(lambda m: jnp.sum(m(X)[1] ** 2))(model)
  ref = jax.grad(lambda p: jnp.sum(linen.apply({"params": p}, X)[1] ** 2))(params)
  jax.tree.map(lambda a, b: _close(a, b, 1e-5), nnx.to_pure_dict(grads), ref)


class _Regressor(nnx.Module):
  def __init__(self, rngs):
    self.lstm = snnx.LSTM(F, H, num_layers=2, bidirectional=True, return_sequences=False,
                          dropout=0.1, recurrent_dropout=0.1, rngs=rngs)
    self.head = nnx.Linear(2 * H, 1, rngs=rngs)

  def __call__(self, x):
    return self.head(self.lstm(x)[1])


def test_nnx_lstm_trains_in_an_optimizer_loop_under_nnx_jit():
  model = _Regressor(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  y = jnp.sum(X, axis=(1, 2))[:, None]
  before = jax.tree.map(jnp.copy, snnx.linen_params(model.lstm))

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), snnx.linen_params(model.lstm), before)
  assert all(jax.tree.leaves(moved))
  graphdef, state = nnx.split(model)  # the state round-trips
  copy = nnx.merge(graphdef, state)
  model.eval()
  copy.eval()
  np.testing.assert_array_equal(copy(X), model(X))


def test_nnx_cell_runs_in_nnx_rnn():
  cell = snnx.LSTMCell(F, H, rngs=nnx.Rngs(0), precision="highest")
  ys = nnx.RNN(cell)(X)
  layer = lstm.LSTMLayer(H, precision="highest")
  params = {"cell": snnx.linen_params(cell)}
  _close(ys, layer.apply({"params": params}, X)[1])


def test_nnx_eval_turns_dropout_off():
  model = snnx.LSTM(F, H, num_layers=2, dropout=0.5, input_dropout=0.5, recurrent_dropout=0.5,
                    rngs=nnx.Rngs(0))
  plain = snnx.LSTM(F, H, num_layers=2, rngs=nnx.Rngs(0))
  model.eval()
  np.testing.assert_array_equal(model(X)[1], plain(X)[1])
  model.train()
  assert not np.array_equal(model(X)[1], plain(X)[1])


def test_nnx_options_are_checked():
  with pytest.raises(TypeError, match="unknown option"):
    snnx.LSTM(F, H, rngs=nnx.Rngs(0), hidden_size=3)
  with pytest.raises(ValueError, match="merge must be one of concat, sum"):
    snnx.LSTM(F, H, rngs=nnx.Rngs(0), bidirectional=True, merge="mean")
  with pytest.raises(ValueError, match="built for in_features=2"):
    snnx.LSTM(F, H, rngs=nnx.Rngs(0))(jnp.ones((1, 3, 4)))


# --- Bidirectional stacks and dropout ---------------------------------------------------


def test_bidirectional_stack_reads_both_directions_and_returns_both_carries():
  model = lstm.LSTM(H, num_layers=2, bidirectional=True, precision="highest")
  params = model.init(jax.random.key(0), X)["params"]
  assert set(params) == {"layer0", "layer0_reverse", "layer1", "layer1_reverse"}
  assert params["layer1"]["cell"]["input_kernel"].shape == (2 * H, 4 * H)
  (h, c), y = model.apply({"params": params}, X)
  assert y.shape == (B, T, 2 * H) and h.shape == c.shape == (4, B, H)
  # Layer 0 by hand: a forward layer and a reversed one, outputs concatenated.
  fwd = lstm.LSTMLayer(H, precision="highest").apply({"params": params["layer0"]}, X)
  bwd = lstm.LSTMLayer(H, reverse=True, precision="highest").apply(
      {"params": params["layer0_reverse"]}, X)
  _close(h[0], fwd[0][0])
  _close(h[1], bwd[0][0])
  top = lstm.LSTM(H, num_layers=2, bidirectional=True, return_sequences=False,
                  precision="highest").apply({"params": params}, X)[1]
  _close(top, jnp.concatenate([h[2], h[3]], axis=-1))
  summed = lstm.LSTM(H, bidirectional=True, merge="sum", precision="highest")
  sum_params = summed.init(jax.random.key(0), X)["params"]
  _, ys = summed.apply({"params": sum_params}, X)
  assert ys.shape == (B, T, H)


def _grads_under_dropout(model, key):
  params = model.init(jax.random.key(0), X[:1], deterministic=True)["params"]

  def loss(p):
    return jnp.sum(model.apply({"params": p}, X[:1], deterministic=False,
                               rngs={"dropout": key})[1] ** 2)
  return jax.grad(loss)(params)["layer0"]["cell"]


def test_recurrent_dropout_drops_the_same_units_at_every_step():
  """One mask per sequence (Keras, Gal and Ghahramani): a dropped unit of h never reaches
  the recurrent matmul, so its row of the recurrent kernel gets no gradient at all over
  the whole sequence; a mask drawn per step would reach every row."""
  grads = _grads_under_dropout(lstm.LSTM(8, recurrent_dropout=0.5), jax.random.key(3))
  rows = np.abs(np.asarray(grads["recurrent_kernel"])).sum(axis=1)
  assert 0 < np.sum(rows == 0) < 8 and np.all(np.abs(np.asarray(grads["input_kernel"])) > 0)


def test_input_dropout_drops_the_same_features_at_every_step():
  x_features = 6
  model = lstm.LSTM(4, input_dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (1, T, x_features))
  params = model.init(jax.random.key(0), x, deterministic=True)["params"]
  grads = jax.grad(lambda p: jnp.sum(model.apply(
      {"params": p}, x, deterministic=False, rngs={"dropout": jax.random.key(5)})[1] ** 2))(
          params)["layer0"]["cell"]
  rows = np.abs(np.asarray(grads["input_kernel"])).sum(axis=1)
  assert 0 < np.sum(rows == 0) < x_features


def test_the_recurrent_mask_is_applied_to_h_at_every_step():
  """`run_layer`'s masks against the step function looped by hand."""
  cell = lstm.LSTMCell(H, precision="highest")
  carry = cell.initialize_carry(None, (B, F))
  params = cell.init(jax.random.key(0), carry, X[:, 0])["params"]
  weights = (params["input_kernel"], params["recurrent_kernel"], params["bias"])
  h_mask = jax.random.bernoulli(jax.random.key(2), 0.6, (B, H)) / 0.6
  x_mask = jax.random.bernoulli(jax.random.key(3), 0.6, (B, F)) / 0.6
  (h, c), ys = lstm.run_layer(*weights, X, carry, input_mask=x_mask, recurrent_mask=h_mask,
                              precision="highest")
  state, ref = carry, []
  for t in range(T):
    gx = lstm.project(X[:, t] * x_mask, weights[0], weights[2])
    state = recurrence.lstm_step(weights[1], (state[0] * h_mask, state[1]), gx)
    ref.append(state[0])
  _close(ys, jnp.stack(ref, axis=1))
  _close(c, state[1])


def test_dropout_is_off_in_evaluation_and_the_gradient_matches_autodiff():
  model = lstm.LSTM(H, num_layers=2, dropout=0.3, input_dropout=0.3, recurrent_dropout=0.3,
                    precision="highest")
  plain = lstm.LSTM(H, num_layers=2, precision="highest")
  params = plain.init(jax.random.key(0), X)["params"]
  np.testing.assert_array_equal(model.apply({"params": params}, X, deterministic=True)[1],
                                plain.apply({"params": params}, X)[1])
  with pytest.raises(ValueError, match="deterministic"):
    model.apply({"params": params}, X)
  rngs = {"dropout": jax.random.key(7)}
  grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply({"params": p}, X, lengths=LENGTHS,
                                                   deterministic=False, rngs=rngs)[1] ** 2))(
      params) for m in (model, model.clone(fused=False))]
  jax.tree.map(lambda a, b: _close(a, b, 1e-5), *grads)


def test_rollout_and_stream_refuse_a_bidirectional_lstm():
  model = seqjax.SequenceModel(hidden=4, out_features=1, head="per_step", bidirectional=True)
  params = model.init(jax.random.key(0), jnp.ones((1, 3, 1)))
  with pytest.raises(ValueError, match="bidirectional"):
    rollout.Stream(model, params, batch_size=1)
  with pytest.raises(ValueError, match="bidirectional"):
    rollout.rollout(model, params, jnp.ones((1, 3, 1)), 2)


# --- Forward mode ------------------------------------------------------------------------


def _loss_fn(fused, remat=0, lengths=LENGTHS):
  model = lstm.LSTM(H, num_layers=2, fused=fused, remat=remat, precision="highest")
  params = model.init(jax.random.key(0), X)

  def loss(x):
    (h, c), y = model.apply(params, x, lengths=lengths)
    return jnp.sum(jnp.tanh(y)) + jnp.sum(c ** 2)
  return loss


@pytest.mark.slow
@pytest.mark.parametrize("remat", [0, 3])
def test_jvp_jacfwd_and_hessian_work_through_the_default_lstm(remat):
  fused, reference = _loss_fn(True, remat), _loss_fn(False)
  tangent = jax.random.normal(jax.random.key(4), X.shape)
  _close(jax.jvp(fused, (X,), (tangent,))[1], jax.jvp(reference, (X,), (tangent,))[1], 1e-5)
  _close(jax.jacfwd(fused)(X), jax.jacrev(reference)(X), 1e-5)
  _close(jax.jit(lambda x: jax.jvp(fused, (x,), (tangent,))[1])(X),
         jax.jvp(reference, (X,), (tangent,))[1], 1e-5)
  small = X[:1, :5]  # longer than the remat chunk
  _close(jax.hessian(_loss_fn(True, remat, None))(small),
         jax.hessian(_loss_fn(False, 0, None))(small), 1e-4)


def test_jvp_of_an_already_jitted_lstm_needs_fused_false():
  """`jax.jvp(jax.jit(f))` differentiates a program traced before the forward trace
  existed, so the fused scan cannot step aside: JAX refuses (the docs say what to do),
  and fused=False (or jit outside the jvp, tested above) works."""
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(jax.jit(_loss_fn(True)), (X,), (X,))
  _close(jax.jvp(jax.jit(_loss_fn(False)), (X,), (X,))[1],
         jax.jvp(_loss_fn(True), (X,), (X,))[1], 1e-5)


# --- Defaults and exports ----------------------------------------------------------------


def test_library_defaults_choose_unroll_and_remat_by_shape(monkeypatch):
  seen = []
  scan_layer = lstm.scan_layer
  monkeypatch.setattr(lstm, "scan_layer", lambda *a, **k: seen.append(k) or scan_layer(*a, **k))
  lstm.LSTM(H).init(jax.random.key(0), X)
  snnx.LSTM(F, H, rngs=nnx.Rngs(0))(X)
  expected = (lstm.auto_unroll(T, B, H), lstm.auto_remat(T, B, H))
  assert [(k["unroll"], k["remat"]) for k in seen] == [expected, expected]


FORWARD_MODE = recurrence.forward_mode


def _fused(fn, monkeypatch):
  """Whether the LSTM took the fused scan (the hand-written VJP) in `fn(loss, params)`."""
  seen = []
  monkeypatch.setattr(recurrence, "forward_mode",
                      lambda tree: seen.append(FORWARD_MODE(tree)) or seen[-1])
  model = lstm.LSTM(H, precision="highest")
  params = model.init(jax.random.key(0), X)
  seen.clear()
  fn(lambda p, x: jnp.sum(model.apply(p, x)[1] ** 2), params)
  assert seen and len(set(seen)) == 1, seen
  return not seen[0]


@pytest.mark.slow
def test_reverse_mode_keeps_the_fused_vjp_and_forward_mode_leaves_it(monkeypatch):
  """Training runs the hand-written VJP: `recurrence.forward_mode` must see no forward
  trace in reverse mode (it reads JAX's tracer classes by name)."""
  grad = lambda f, p: jax.grad(f)(p, X)  # noqa: E731
  assert _fused(grad, monkeypatch)
  assert _fused(lambda f, p: jax.jit(jax.grad(f))(p, X), monkeypatch)
  assert _fused(lambda f, p: jax.vmap(lambda x: jax.grad(f)(p, x[None]))(X), monkeypatch)
  assert _fused(lambda f, p: jax.vjp(lambda q: f(q, X), p)[1](1.0), monkeypatch)
  assert _fused(lambda f, p: jax.lax.scan(lambda c, _: (c, grad(f, p)), 0.0, None, 2),
                monkeypatch)
  assert _fused(lambda f, p: jax.grad(jax.checkpoint(f))(p, X), monkeypatch)
  assert not _fused(lambda f, p: jax.jvp(lambda x: f(p, x), (X,), (X,)), monkeypatch)
  assert not _fused(lambda f, p: jax.jacfwd(lambda x: f(p, x))(X), monkeypatch)


@pytest.mark.slow
def test_the_readme_flax_block_runs_as_written():
  import os
  import re
  with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
    block = re.findall(r"```python\n(.*?)```", f.read(), re.S)[2]
  namespace = {}
  exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
  assert namespace["y"].shape == (8, 50, 64) and namespace["h"].shape == (4, 8, 32)
  assert np.isfinite(float(namespace["loss"]))
