"""Tier 1: shapes and numerics of the hand-written LSTM (tiny sizes)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from seqjax.model import lstm, sequence

KEY = jax.random.key(0)
# Code paths are compared at float32 arithmetic on every backend (a GPU's default
# rounds matmul operands to TF32, a TPU's to bfloat16).
LSTM = functools.partial(lstm.LSTM, precision="highest")
LSTMLayer = functools.partial(lstm.LSTMLayer, precision="highest")


def _init(module, x, **kw):
  # Jitted: an eager init runs the forward pass op by op (seconds a model on a CPU).
  return jax.jit(module.init)(KEY, x, **kw)


def _randn(seed, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("layers,return_sequences", [(1, True), (2, True), (2, False)])
def test_shapes(layers, return_sequences):
  x = _randn(1, (3, 5, 2))
  m = LSTM(4, layers, return_sequences=return_sequences)
  (h, c), y = m.apply(_init(m, x), x)
  assert h.shape == c.shape == (layers, 3, 4)
  assert h.dtype == c.dtype == jnp.float32
  assert y.shape == ((3, 5, 4) if return_sequences else (3, 4))
  if return_sequences:
    np.testing.assert_allclose(y[:, -1], h[-1], atol=1e-6)
  else:
    np.testing.assert_allclose(y, h[-1], atol=1e-6)


def test_param_layout_and_forget_bias():
  x = jnp.ones((1, 3, 2))
  m = LSTMLayer(5, forget_bias=1.0)
  params = _init(m, x)["params"]["cell"]
  assert params["input_kernel"].shape == (2, 20)
  assert params["recurrent_kernel"].shape == (5, 20)
  np.testing.assert_array_equal(params["bias"], jnp.r_[jnp.zeros(5), jnp.ones(5), jnp.zeros(10)])
  m0 = LSTMLayer(5, forget_bias=0.0)
  np.testing.assert_array_equal(_init(m0, x)["params"]["cell"]["bias"], jnp.zeros(20))


@pytest.mark.parametrize("gain", [0.01, 1.0, 3.0])
def test_orthogonal_recurrent_init_per_gate_with_gain(gain):
  m = LSTMLayer(6, recurrent_init=lstm.initializer("orthogonal", gain))
  w = _init(m, jnp.ones((1, 2, 3)))["params"]["cell"]["recurrent_kernel"]
  for block in np.split(np.asarray(w), 4, axis=1):  # numpy: float32 on every backend
    np.testing.assert_allclose(block.T @ block, gain**2 * np.eye(6), atol=1e-5 * max(1, gain**2))


def test_seed_input_kernel_orthogonal_gain():
  # The mean seed's Keras `kernel_initializer=orthogonal(gain=.01)` on a [1, 40] kernel.
  m = LSTMLayer(10, kernel_init=lstm.initializer("orthogonal", 0.01))
  w = _init(m, jnp.ones((1, 2, 1)))["params"]["cell"]["input_kernel"]
  np.testing.assert_allclose(jnp.linalg.norm(w), 0.01, rtol=1e-5)


def test_unknown_initializer_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown name 'ortho'.*orthogonal"):
    lstm.initializer("ortho")


@pytest.mark.parametrize("in_features,hidden,layers,expected", [
    pytest.param(1, 100, 1, 40_800, marks=pytest.mark.slow),  # freq seed: LSTM(100), 1 input
    (1, 10, 1, 480),  # mean seed: LSTM(10)
    pytest.param(100, 50, 1, 30_200, marks=pytest.mark.slow),  # echo seed: 100 one-hot classes
    (1, 32, 2, 12_672),  # sine seed: LSTM(32) x 2
])
def test_seed_param_counts(in_features, hidden, layers, expected):
  m = LSTM(hidden, layers)
  params = _init(m, jnp.ones((1, 2, in_features)))
  assert sum(p.size for p in jax.tree.leaves(params)) == expected
  assert lstm.num_lstm_params(in_features, hidden, layers) == expected


def test_cell_step_equals_layer_step():
  x = _randn(2, (2, 1, 3))
  layer = LSTMLayer(4)
  params = _init(layer, x)
  carry0 = (_randn(3, (2, 4)), _randn(4, (2, 4)))
  carry, y = layer.apply(params, x, carry0)
  cell = lstm.LSTMCell(4, 3, precision="highest")
  carry_c, y_c = cell.apply({"params": params["params"]["cell"]}, carry0, x[:, 0])
  np.testing.assert_allclose(y[:, 0], y_c, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), carry, carry_c)


def test_step_by_step_equals_scan_and_chunks():
  """What stateful rollout relies on: threading the carry = one long scan."""
  x = _randn(5, (3, 12, 2))
  m = LSTM(6, 2)
  params = _init(m, x)
  apply = jax.jit(m.apply)  # one program for the 12 single steps
  carry_full, y_full = apply(params, x)

  carry, ys = None, []
  for t in range(12):
    carry, y = apply(params, x[:, t:t + 1], carry)
    ys.append(y)
  np.testing.assert_allclose(jnp.concatenate(ys, 1), y_full, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, carry_full)

  carry, ys = None, []
  for start, stop in [(0, 5), (5, 6), (6, 12)]:
    carry, y = apply(params, x[:, start:stop], carry)
    ys.append(y)
  np.testing.assert_allclose(jnp.concatenate(ys, 1), y_full, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, carry_full)


@pytest.mark.parametrize("reverse", [False, True])
def test_masking_matches_unpadded_runs(reverse):
  lengths = [3, 7, 1, 5]
  x = _randn(6, (4, 7, 2))
  x = jnp.where(jnp.arange(7)[None, :, None] < jnp.array(lengths)[:, None, None], x, 9.0)
  m = LSTM(5, 2, reverse=reverse)
  params = _init(m, x)
  (h, c), y = m.apply(params, x, lengths=jnp.array(lengths))
  for b, n in enumerate(lengths):
    (hb, cb), yb = m.apply(params, x[b:b + 1, :n])
    np.testing.assert_allclose(y[b, :n], yb[0], atol=1e-5)
    np.testing.assert_array_equal(y[b, n:], 0.0)
    np.testing.assert_allclose(h[:, b], hb[:, 0], atol=1e-5)
    np.testing.assert_allclose(c[:, b], cb[:, 0], atol=1e-5)


def test_reverse_equals_forward_on_flipped_input():
  x = _randn(7, (2, 6, 3))
  fwd, bwd = LSTMLayer(4), LSTMLayer(4, reverse=True)
  params = _init(fwd, x)
  carry_f, y_f = fwd.apply(params, x[:, ::-1])
  carry_b, y_b = bwd.apply(params, x)
  np.testing.assert_allclose(y_b, y_f[:, ::-1], atol=1e-6)
  np.testing.assert_allclose(carry_b[0], carry_f[0], atol=1e-6)


@pytest.mark.parametrize("unroll", [2, 5, True])
def test_unroll_does_not_change_the_function(unroll):
  x = _randn(8, (2, 10, 3))
  params = _init(LSTM(4), x)
  _, y1 = LSTM(4).apply(params, x)
  _, y2 = LSTM(4, unroll=unroll).apply(params, x)
  np.testing.assert_allclose(y1, y2, atol=1e-6)


@pytest.mark.parametrize("remat,masked", [
    pytest.param(3, False, marks=pytest.mark.slow), (4, True), (10, False), (-1, False)])
def test_remat_chunks_do_not_change_values_or_gradients(remat, masked):
  """Chunked, checkpointed scans (with a tail when T % remat != 0) equal one scan."""
  x = _randn(13, (2, 10, 3))
  mask = jnp.arange(10)[None, :] < jnp.asarray([[10], [6]]) if masked else None
  params = _init(LSTM(4, 2), x)

  def loss(params, remat):
    (h, c), y = LSTM(4, 2, remat=remat).apply(params, x, mask=mask)
    return jnp.sum(jnp.sin(y)) + jnp.sum(h * c)

  (l1, g1), (l2, g2) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, r)
                        for r in (0, remat))
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g2)


def test_remat_stores_fewer_residuals():
  """The backward pass of a chunked scan saves carries per chunk, not gates per step.

  Beyond the carries it keeps its input, the projected x [T, B, G], which
  exists anyway (the forward pass made it); an unchunked scan keeps
  [B, G] + 3 [B, H] per step on top of it.
  """
  x = _randn(14, (2, 64, 3))
  projected_bytes = 64 * 2 * 4 * 8 * 4
  params = _init(LSTM(8), x)

  def saved_bytes(remat):
    f = lambda p: jnp.sum(LSTM(8, remat=remat).apply(p, x)[1])
    _, residuals = jax.vjp(f, params)
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(residuals))

  assert saved_bytes(8) - projected_bytes < 0.2 * saved_bytes(0)


def test_auto_unroll_and_remat_choices():
  assert lstm.auto_unroll(2000, 1, 10, "cpu") == 8
  assert lstm.auto_unroll(5, 5, 50, "gpu") == 5  # never more than T
  assert lstm.auto_remat(100, 32, 100) == 0
  assert lstm.auto_remat(10000, 64, 256) == 100


def test_bfloat16_compute_keeps_float32_params_and_carry():
  x = _randn(9, (2, 8, 3))
  m16, m32 = LSTM(8, 2, dtype=jnp.bfloat16), LSTM(8, 2)
  params = _init(m16, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  (h, c), y = m16.apply(params, x)
  assert h.dtype == c.dtype == y.dtype == jnp.float32
  _, y32 = m32.apply(params, x)
  # bfloat16 operands: about 4 epsilons of bfloat16 (2^-7) after 8 steps
  np.testing.assert_allclose(y, y32, atol=3e-2)


def test_gradients_match_finite_differences_float64():
  with jax.enable_x64(True):
    x = _randn(10, (2, 4, 3)).astype(jnp.float64)
    m = LSTM(3, 2, dtype=jnp.float64, param_dtype=jnp.float64)
    params = _init(m, x)
    carry0 = (_randn(11, (2, 2, 3), 0.5).astype(jnp.float64),
              _randn(12, (2, 2, 3), 0.5).astype(jnp.float64))

    def loss(params, x, carry0):
      (h, c), y = m.apply(params, x, carry0)
      return jnp.sum(jnp.sin(y)) + jnp.sum(h * c)

    check_grads(jax.jit(loss), (params, x, carry0), order=1, modes=["rev"], atol=1e-7,
                rtol=1e-7)


def test_jit_traces_once_per_shape():
  m = LSTM(4)
  x = jnp.ones((2, 5, 3))
  params = _init(m, x)
  traces = []

  @jax.jit
  def f(params, x):
    traces.append(1)
    return m.apply(params, x)

  for _ in range(3):
    f(params, x)
  assert len(traces) == 1


def test_keras_style_mask_skips_steps_anywhere():
  """`mask` (Keras Masking) = running only the unmasked steps; masked outputs are 0."""
  x = _randn(13, (2, 6, 2))
  mask = jnp.array([[False, False, True, True, False, True],
                    [True, True, True, True, True, True]])
  m = LSTM(3, 2)
  params = _init(m, x)
  (h, c), y = m.apply(params, x, mask=mask)
  for b in range(2):
    keep = np.flatnonzero(np.asarray(mask[b]))
    (hb, cb), yb = m.apply(params, x[b:b + 1, keep])
    np.testing.assert_allclose(y[b, keep], yb[0], atol=1e-5)
    np.testing.assert_array_equal(y[b, ~np.asarray(mask[b])], 0.0)
    np.testing.assert_allclose(h[:, b], hb[:, 0], atol=1e-5)


def test_options_are_declared_once_and_reach_every_module():
  """`LSTMOptions` is the one declaration: every module takes it by keyword, and the
  config reaches each option (remat and reverse included)."""
  from seqjax.config import configlib

  names = {f.name for f in dataclasses.fields(lstm.LSTMOptions)} - {"parent", "name"}
  for module in (lstm.LSTMLayer, lstm.LSTM, sequence.SequenceModel):
    assert names <= {f.name for f in dataclasses.fields(module)}
  config = configlib.load("freq", "quick")
  m = config.model
  m.reverse, m.remat, m.unroll, m.fused, m.precision = True, -1, 3, False, "high"
  m.dtype, m.param_dtype, m.forget_bias, m.chrono_tmax = "bfloat16", "bfloat16", 0.5, 7.0
  model = sequence.from_config(m, 1, "last")
  options = lstm.options_of(model)
  assert (options["reverse"], options["remat"], options["unroll"], options["fused"],
          options["precision"], options["forget_bias"], options["chrono_tmax"]) == (
              True, -1, 3, False, "high", 0.5, 7.0)
  assert options["dtype"] == options["param_dtype"] == jnp.bfloat16
  # The stacked LSTM passes them on to its layers: a reversed model reads time backwards.
  x = jax.random.normal(jax.random.key(0), (2, 5, 3))
  fwd, bwd = lstm.LSTM(4), lstm.LSTM(4, reverse=True)
  params = fwd.init(jax.random.key(1), x)
  np.testing.assert_allclose(bwd.apply(params, x)[1], fwd.apply(params, x[:, ::-1])[1][:, ::-1],
                             rtol=1e-6, atol=1e-6)


def test_scale_gains_scales_every_cell_and_shifts_the_forget_gate():
  params = {"lstm": {"layer0": {"cell": {"input_kernel": jnp.ones((2, 8)),
                                         "recurrent_kernel": jnp.ones((2, 8)),
                                         "bias": jnp.zeros(8)}}},
            "head": {"Dense_0": {"kernel": jnp.ones((2, 1))}}}
  out = lstm.scale_gains(params, 0.5, 3.0, 1.0)
  cell = out["lstm"]["layer0"]["cell"]
  np.testing.assert_array_equal(cell["input_kernel"], 0.5)
  np.testing.assert_array_equal(cell["recurrent_kernel"], 3.0)
  np.testing.assert_array_equal(cell["bias"], [0, 0, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(out["head"]["Dense_0"]["kernel"], 1.0)


def test_the_package_exports_its_public_api():
  import seqjax
  from seqjax.model import lstm, sequence
  from seqjax.model import rollout as rollout_module
  from seqjax.train import inference
  assert seqjax.LSTM is lstm.LSTM and seqjax.LSTMCell is lstm.LSTMCell
  assert seqjax.SequenceModel is sequence.SequenceModel and seqjax.load is inference.load
  assert seqjax.model.rollout is rollout_module
  assert seqjax.__version__[0].isdigit()  # installed, or "0+unknown" in a source tree


@pytest.mark.parametrize("pool", ["mean", "max",
                                  pytest.param("attention", marks=pytest.mark.slow)])
def test_a_pooled_head_reads_only_the_valid_steps(pool):
  """Padding, by lengths or by a Keras-style mask, does not change a pooled prediction."""

  lengths = [3, 7, 1, 5]
  x = _randn(9, (4, 7, 2))
  x = jnp.where(jnp.arange(7)[None, :, None] < jnp.array(lengths)[:, None, None], x, 9.0)
  model = sequence.SequenceModel(hidden=5, out_features=3, pool=pool, head_hidden=(4,))
  params = _init(model, x)
  _, y = model.apply(params, x, lengths=jnp.array(lengths))
  mask = jnp.arange(7)[None, :] < jnp.array(lengths)[:, None]
  _, y_mask = model.apply(params, x, mask=mask)
  _, feats = LSTM(5).apply({"params": params["params"]["lstm"]}, x, lengths=jnp.array(lengths))
  for b, n in enumerate(lengths):
    _, alone = model.apply(params, x[b:b + 1, :n])
    np.testing.assert_allclose(y[b], alone[0], atol=1e-5)
    np.testing.assert_allclose(y_mask[b], alone[0], atol=1e-5)
    # The pooled vector is the valid steps' mean, maximum, or softmax-weighted mean.
    if pool == "attention":
      attention = params["params"]["attention"]
      score = (feats[b:b + 1] @ attention["kernel"])[..., 0] + attention["bias"]
      weight = jax.nn.softmax(score[0, :n])
      np.testing.assert_allclose(
          sequence.attend_over_time(feats[b:b + 1], score, jnp.array([n]))[0],
          (weight[:, None] * feats[b, :n]).sum(0), atol=1e-6)
      continue
    want = feats[b, :n].mean(0) if pool == "mean" else feats[b, :n].max(0)
    np.testing.assert_allclose(sequence.pool_over_time(feats[b:b + 1], pool,
                                                       jnp.array([n]))[0], want, atol=1e-6)
  _, last = sequence.SequenceModel(hidden=5, out_features=3, head_hidden=(4,)).apply(params, x)
  assert not np.allclose(last, model.apply(params, x)[1])  # pooling changes the answer


def test_patches_read_k_steps_as_one_and_keep_the_valid_ones():

  x = jnp.arange(2 * 5 * 2, dtype=jnp.float32).reshape(2, 5, 2)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  out, lengths, patched = sequence.patches(x, 2, jnp.array([3, 5]), mask)
  assert out.shape == (2, 3, 4) and lengths.tolist() == [2, 3]
  assert patched.tolist() == [[True, True, False], [True, True, True]]
  np.testing.assert_array_equal(out[1, 0], x[1, :2].reshape(-1))  # steps 0, 1 side by side
  np.testing.assert_array_equal(out[0, 1], [4, 5, 0, 0])  # a masked step reads as zeros
  np.testing.assert_array_equal(out[1, 2], [18, 19, 0, 0])  # past T: zeros
  nan = jnp.where(jnp.arange(5)[None, :, None] < jnp.array([3, 5])[:, None, None], x, jnp.nan)
  by_lengths = sequence.patches(nan, 2, jnp.array([3, 5]))[0]
  np.testing.assert_array_equal(by_lengths[0, 1], [4, 5, 0, 0])  # padding reads as zeros


@pytest.mark.parametrize("k", [3, 4])
def test_the_conv_branch_is_a_same_padded_convolution_of_the_valid_steps(k):
  """One layer equals `lax.conv` ('SAME') then LayerNorm and ReLU; values past a
  sequence's end do not reach it, and a population's members vmap as matmuls."""
  from seqjax.model import numerics, sequence
  x = _randn(3, (2, 9, 3))
  branch = sequence.ConvBranch((4,), (k,))
  params = branch.init(KEY, x)
  dense = params["params"]["Dense_0"]
  conv = jax.lax.conv_general_dilated(
      x, dense["kernel"].reshape(k, 3, 4), (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"),
      precision=jax.lax.Precision.HIGHEST) + dense["bias"]
  mean, var = conv.mean(-1, keepdims=True), conv.var(-1, keepdims=True)
  want = jax.nn.relu((conv - mean) / jnp.sqrt(var + 1e-6)).mean(1)
  tol = 64 * numerics.unit_roundoff("highest") * k * 3
  np.testing.assert_allclose(branch.apply(params, x), want, rtol=tol, atol=tol)
  lengths = jnp.array([5, 9])
  garbage = jnp.where(jnp.arange(9)[None, :, None] < lengths[:, None, None], x, 7.0)
  np.testing.assert_allclose(branch.apply(params, garbage, lengths)[0],
                             branch.apply(params, x[:1, :5])[0], rtol=tol, atol=tol)
  members = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
  jaxpr = str(jax.make_jaxpr(jax.vmap(branch.apply, in_axes=(0, None)))(members, x))
  assert "conv_general_dilated" not in jaxpr


def test_a_conv_branch_joins_the_lstm_before_the_head():

  x = _randn(4, (2, 12, 1))
  model = sequence.SequenceModel(hidden=5, out_features=3, pool="max", conv=(6, 4),
                                 conv_kernels=(5, 3))
  params = _init(model, x)
  assert params["params"]["head"]["Dense_0"]["kernel"].shape == (5 + 4, 3)
  assert model.apply(params, x)[1].shape == (2, 3)
  with pytest.raises(ValueError, match="for one prediction a sequence"):
    _init(sequence.SequenceModel(hidden=5, head="per_step", conv=(4,), conv_kernels=(3,)), x)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nan_padding_reaches_no_gradient(bidirectional):
  """NaN (or anything) past `lengths` or outside `mask`: the outputs and the parameter
  gradients are those of zero padding, exactly."""
  x = _randn(5, (3, 6, 2))
  lengths = jnp.array([2, 6, 4])
  valid = jnp.arange(6)[None, :] < lengths[:, None]
  nan = jnp.where(valid[..., None], x, jnp.nan)
  zero = jnp.where(valid[..., None], x, 0.0)
  model = LSTM(4, bidirectional=bidirectional)
  params = _init(model, x)
  for kw in ({"lengths": lengths}, {"mask": valid}):
    loss = lambda v, inputs, kw=kw: model.apply(v, inputs, **kw)[1].sum()  # noqa: E731
    got, want = jax.grad(loss)(params, nan), jax.grad(loss)(params, zero)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.apply(params, nan, **kw)[1],
                                  model.apply(params, zero, **kw)[1])


def test_the_model_summary_says_layers_reading_head_and_shapes():
  model = sequence.SequenceModel(hidden=32, out_features=5, num_layers=2, pool="max", patch=4,
                                 head_hidden=(16,), bidirectional=True)
  assert model.summary(400, 3, "5 classes", 12345) == (
      "model: LSTM 32 x 2 layers, both directions (concat) in patches of 4 steps (max over "
      "time) -> head Dense 16 -> 5; 12,345 parameters; input [batch, 400 steps, 3 features] "
      "-> 5 classes")
  per_step = sequence.SequenceModel(hidden=8, out_features=1, head="per_step")
  assert per_step.summary(50, 1, "1 output a step", 9) == (
      "model: LSTM 8 (every step) -> head 1; 9 parameters; input [batch, 50 steps, 1 feature] "
      "-> 1 output a step")


def test_augmentation_acts_only_in_training_and_follows_its_key():
  x = _randn(3, (4, 9, 2))
  plain = sequence.SequenceModel(hidden=5, out_features=3, pool="max")
  noisy = sequence.SequenceModel(hidden=5, out_features=3, pool="max", input_noise=0.3,
                                 input_scaling=0.2)
  params = _init(plain, x)
  # Evaluation and prediction read the inputs as they are.
  np.testing.assert_array_equal(noisy.apply(params, x)[1], plain.apply(params, x)[1])
  rng = jax.random.key(7)
  train = lambda key: noisy.apply(params, x, train=True, rngs={"dropout": key})[1]  # noqa: E731
  np.testing.assert_array_equal(train(rng), train(rng))  # the same key, the same batch
  assert not np.allclose(train(rng), train(jax.random.key(8)))
  assert not np.allclose(train(rng), plain.apply(params, x, train=True,
                                                 rngs={"dropout": rng})[1])
  key = jax.random.key(1)
  scaled = sequence.augment(x, key, 0.0, 0.5)  # one factor a sequence and feature
  ratio = scaled / x
  np.testing.assert_allclose(ratio, jnp.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-4)
  np.testing.assert_array_equal(sequence.augment(x, key, 0.0, 0.0), x)


def test_view_dropout_zeroes_the_level_of_some_training_sequences_only():
  """Inputs read two ways: [level features | shape features]. In training a dropped
  sequence reads as if its level features were zero, the others as they are; evaluation
  reads every sequence as it is."""
  x = _randn(4, (64, 6, 4))  # 2 level features, then 2 shape features
  plain = sequence.SequenceModel(hidden=5, out_features=3, pool="max")
  viewed = sequence.SequenceModel(hidden=5, out_features=3, pool="max", level_features=2,
                                  view_dropout=0.5)
  params = _init(plain, x)
  np.testing.assert_array_equal(viewed.apply(params, x)[1], plain.apply(params, x)[1])
  as_is = plain.apply(params, x)[1]
  no_level = plain.apply(params, x.at[..., :2].set(0.0))[1]
  got = viewed.apply(params, x, train=True, rngs={"dropout": jax.random.key(9)})[1]
  from seqjax.model import numerics
  eps = 16 * numerics.unit_roundoff("highest")  # the same float32 rows, in other batches
  tol = dict(rtol=eps, atol=eps)
  kept = np.all(np.isclose(got, as_is, **tol), axis=1)
  dropped = np.all(np.isclose(got, no_level, **tol), axis=1)
  assert np.all(kept | dropped)  # whole sequences, one way or the other
  assert 16 < dropped.sum() < 48  # about half of them
  key = jax.random.key(3)
  np.testing.assert_array_equal(sequence.drop_level(x, key, 2, 0.5)[..., 2:], x[..., 2:])
  np.testing.assert_array_equal(sequence.drop_level(x, key, 2, 0.0), x)
  assert "the level zeroed in 50% of training sequences" in viewed.summary(6, 4, "3 classes", 1)
  assert "level" not in plain.summary(6, 4, "3 classes", 1)
