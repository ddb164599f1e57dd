"""The Pallas recurrence kernel against the XLA scan (interpret mode on CPU), its GPU
lowering checked on this CPU, and the choice between them."""

import os
import sys
import textwrap
import warnings

import cli_process
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.model import lstm, recurrence
from seqjax.model.kernels import pallas_lstm, selection

# The same float32 arithmetic ("highest") in another order: a few roundings apart.
ATOL = 1e-5


def _close(a, b, atol=ATOL):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def _problem(steps, batch, hidden, masked, dropped, carry_in, seed=0):
  k = jax.random.split(jax.random.key(seed), 6)
  w_h = jax.random.normal(k[0], (hidden, 4 * hidden)) * 0.4
  gx = jax.random.normal(k[1], (steps, batch, 4 * hidden))
  zeros = jnp.zeros((batch, hidden))
  carry = ((jax.random.normal(k[2], (batch, hidden)) * 0.5,
            jax.random.normal(k[3], (batch, hidden)) * 0.5) if carry_in else (zeros, zeros))
  mask = None
  if masked:  # anywhere in the sequence, and some rows fully padded
    mask = jax.random.bernoulli(k[4], 0.7, (steps, batch)).at[:, 0].set(False)
  h_mask = jax.random.bernoulli(k[5], 0.7, (batch, hidden)) / 0.7 if dropped else None
  return w_h, gx, carry, mask, h_mask


def _loss(scan, w_h, gx, carry, mask, h_mask):
  (h, c), ys = scan(w_h, gx, carry, mask, h_mask)
  return jnp.sum(jnp.sin(ys)) + jnp.sum(h * c) + jnp.sum(c)


@pytest.mark.parametrize("steps,batch,hidden,masked,dropped,carry_in", [
    pytest.param(7, 3, 5, False, False, False,  # odd H, B below one block
                 marks=pytest.mark.slow),
    (9, 20, 17, True, False, True),     # a mask, two batch blocks, H padded to 32
    pytest.param(6, 4, 16, True, True, True,  # recurrent dropout's mask, H a whole tile
                 marks=pytest.mark.slow),
    (1, 1, 3, False, False, True),      # one step
])
def test_kernel_equals_the_xla_scan_in_values_and_gradients(steps, batch, hidden, masked,
                                                             dropped, carry_in):
  args = _problem(steps, batch, hidden, masked, dropped, carry_in)
  xla = lambda *a: recurrence.scan(*a, precision="highest")  # noqa: E731
  kernel = lambda *a: pallas_lstm.scan(*a, precision="highest",  # noqa: E731
                                       interpret=selection.interpreted())  # Triton on a GPU
  (h, c), ys = kernel(*args)
  (h_ref, c_ref), ys_ref = xla(*args)
  _close(ys, ys_ref)
  _close(h, h_ref)
  _close(c, c_ref)
  grads = jax.grad(lambda *a: _loss(kernel, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  ref = jax.grad(lambda *a: _loss(xla, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  jax.tree.map(_close, grads, ref)


@pytest.mark.parametrize("resident", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["resident", "streamed"])
def test_both_ways_of_holding_the_recurrent_weights_give_the_scans_values_and_gradients(
    resident):
  """W_h's gate tiles held across the loop (small H) or loaded every step (large H)."""
  args = _problem(8, 18, 24, True, True, True, seed=3)
  tuning = pallas_lstm.Tuning(num_warps=2, resident=resident)
  kernel = lambda *a: pallas_lstm.scan(*a, interpret=selection.interpreted(),  # noqa: E731
                                       tuning=tuning)
  xla = lambda *a: recurrence.scan(*a, precision="highest")  # noqa: E731
  jax.tree.map(_close, kernel(*args), xla(*args))
  grads = jax.grad(lambda *a: _loss(kernel, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  ref = jax.grad(lambda *a: _loss(xla, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  jax.tree.map(_close, grads, ref)
  assert pallas_lstm.default_tuning(32).resident and not pallas_lstm.default_tuning(128).resident


def _kernel_outputs(fn, *args) -> list[int]:
  """The number of outputs of each pallas_call in fn's program."""
  jaxpr = jax.make_jaxpr(fn)(*args)
  found = []

  def walk(value):
    if isinstance(value, list | tuple):
      for v in value:
        walk(v)
    elif hasattr(value, "eqns"):  # a Jaxpr
      for eqn in value.eqns:
        if eqn.primitive.name == "pallas_call":
          found.append(len(eqn.outvars))
        else:
          walk(list(eqn.params.values()))
    elif hasattr(value, "jaxpr"):  # a ClosedJaxpr
      walk(value.jaxpr)
  walk(jaxpr.jaxpr)
  return found


def test_without_a_gradient_the_forward_kernel_keeps_no_per_step_carries():
  args = _problem(5, 3, 4, False, False, False)
  kernel = lambda w_h, gx: pallas_lstm.scan(w_h, gx, *args[2:], interpret=True)  # noqa: E731
  assert _kernel_outputs(kernel, *args[:2]) == [3]  # outputs, final h, final c
  grad = jax.grad(lambda w_h, gx: jnp.sum(kernel(w_h, gx)[1]), argnums=(0, 1))
  assert _kernel_outputs(grad, *args[:2]) == [5, 3]  # + every step's h and c; the backward


@pytest.mark.slow
def test_kernel_computes_in_bfloat16_with_a_float32_carry():
  w_h, *rest = _problem(5, 18, 12, True, True, True)
  args = (w_h.astype(jnp.bfloat16), *rest)  # bfloat16 parameters too
  kernel = lambda *a: pallas_lstm.scan(*a, dtype=jnp.bfloat16,  # noqa: E731
                                       interpret=selection.interpreted())
  xla = lambda *a: recurrence.scan(*a, dtype=jnp.bfloat16)  # noqa: E731
  (h, c), ys = kernel(*args)
  (h_ref, c_ref), ys_ref = xla(*args)
  assert h.dtype == c.dtype == ys.dtype == jnp.float32
  _close(ys, ys_ref, 2e-2)  # bfloat16 operands: 8 bits of mantissa, rounded in either order
  _close(c, c_ref, 2e-2)
  grads = jax.grad(lambda *a: _loss(kernel, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  ref = jax.grad(lambda *a: _loss(xla, *a, *args[3:]), argnums=(0, 1, 2))(*args[:3])
  assert grads[0].dtype == jnp.bfloat16
  jax.tree.map(lambda a, b: _close(a.astype(jnp.float32), b.astype(jnp.float32), 5e-2),
               grads, ref)


@pytest.mark.parametrize("options", [
    pytest.param({"num_layers": 2, "reverse": True}, marks=pytest.mark.slow),
    {"num_layers": 2, "bidirectional": True},
    pytest.param({"remat": 3}, marks=pytest.mark.slow),
], ids=lambda o: ",".join(o))
def test_the_lstm_with_kernel_pallas_equals_kernel_xla(options):
  """Lengths, reverse, stacked layers and a carry in and out, through the modules."""
  x = jax.random.normal(jax.random.key(1), (3, 7, 2))
  lengths = jnp.array([7, 2, 5])
  xla = lstm.LSTM(5, kernel="xla", precision="highest", **options)
  params = xla.init(jax.random.key(0), x)
  carry = jax.tree.map(lambda a: a + 0.3, xla.apply(params, x)[0])
  pallas = xla.clone(kernel="pallas")

  def loss(model, p, carry):
    (h, c), y = model.apply(p, x, carry, lengths=lengths)
    return jnp.sum(jnp.sin(y)) + jnp.sum(h * c), (h, c, y)

  (value, out), grads = jax.value_and_grad(lambda p, c: loss(pallas, p, c), argnums=(0, 1),
                                           has_aux=True)(params, carry)
  (value_ref, out_ref), grads_ref = jax.value_and_grad(
      lambda p, c: loss(xla, p, c), argnums=(0, 1), has_aux=True)(params, carry)
  jax.tree.map(_close, out, out_ref)
  jax.tree.map(_close, grads, grads_ref)


@pytest.mark.parametrize("dtype,hidden", [(jnp.float32, 100), (jnp.bfloat16, 100),
                                          (jnp.float32, 10)])
def test_kernel_and_its_gradient_lower_through_triton_for_a_gpu(dtype, hidden, cuda_target):
  """freq's H (W_h loaded every step, 8 warps) and mean's (W_h held, 4 warps)."""
  steps, batch = 20, 32
  w_h = jnp.ones((hidden, 4 * hidden))
  gx = jnp.ones((steps, batch, 4 * hidden))
  carry = (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))
  mask = jnp.ones((steps, batch), bool)

  def loss(w_h, gx):
    (h, c), ys = pallas_lstm.scan(w_h, gx, carry, mask, dtype=dtype, interpret=False)
    return jnp.sum(ys) + jnp.sum(c)

  with cuda_target():
    lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).trace(w_h, gx).lower(
        lowering_platforms=("cuda",))
  text = lowered.as_text()
  assert text.count("triton") >= 2  # the forward and the backward kernel
  with cuda_target():  # inference: the forward kernel that keeps no residuals
    lowered = jax.jit(lambda w_h, gx: pallas_lstm.scan(
        w_h, gx, carry, mask, dtype=dtype, interpret=False)).trace(w_h, gx).lower(
            lowering_platforms=("cuda",))
  assert lowered.as_text().count("triton") >= 1


def test_auto_keeps_the_xla_scan_where_the_kernel_is_not_measured_faster():
  assert selection.choose("auto", 1, 10, "cpu") == "xla"
  assert selection.choose("auto", 32, 100, "cuda") == "xla"  # freq's shape: not measured faster
  assert selection.choose("auto", 5, 50, "cuda") == "xla"  # echo's: measured slower
  assert selection.choose("pallas", 1, 10, "cpu") == "pallas"
  assert selection.interpreted("cpu") and not selection.interpreted("cuda")
  assert selection.choose("pallas", 1, 10, "cpu", dtype=jnp.float64) == "xla"  # f32, bf16 only


def test_auto_picks_the_kernel_where_measured_faster_on_one_device_only(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda *a: 1)
  monkeypatch.setitem(selection.PALLAS_FASTER, "scan", {"gpu": ((4096, 128),)})
  assert selection.choose("auto", 32, 100, "cuda") == "pallas"
  assert selection.choose("auto", 64, 100, "cuda") == "xla"  # more work than measured
  assert selection.choose("auto", 32, 256, "cuda") == "xla"  # a larger H than measured
  assert selection.choose("auto", 32, 100, "cuda", job="free_run") == "xla"  # another job
  monkeypatch.setattr(jax, "device_count", lambda *a: 2)  # a batch split over 2 devices
  assert selection.choose("auto", 32, 100, "cuda") == "xla"
  assert selection.choose("pallas", 32, 100, "cuda") == "pallas"


def test_the_kernel_lowers_through_triton_on_a_gpu_backend(monkeypatch):
  """JAX calls an NVIDIA GPU backend "gpu": there the kernel is not interpreted."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not selection.interpreted()
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert selection.interpreted()
  with pytest.raises(ValueError, match="kernel must be one of auto, xla, pallas"):
    lstm.LSTM(4, kernel="cudnn").init(jax.random.key(0), jnp.ones((1, 2, 1)))


def test_a_kernel_that_does_not_compile_falls_back_to_xla_with_one_warning(monkeypatch):
  """On a GPU the kernel is compiled ahead for each shape; a failure is one warning."""
  monkeypatch.setattr(selection, "interpreted", lambda platform=None: False)
  selection.compiles.cache_clear()

  def broken(*args, **kwargs):
    raise RuntimeError("Triton: out of shared memory\nmore detail")
  monkeypatch.setattr(pallas_lstm, "scan", broken)
  x = jax.random.normal(jax.random.key(1), (2, 5, 3))
  model = lstm.LSTM(4, kernel="pallas", precision="highest")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    params = model.init(jax.random.key(0), x)
    y = model.apply(params, x)[1]  # the same shape: no second probe, no second warning
  selection.compiles.cache_clear()
  messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
  assert len(messages) == 1 and "\n" not in messages[0]
  assert "running the XLA path" in messages[0] and "out of shared memory" in messages[0]
  _close(y, lstm.LSTM(4, kernel="xla", precision="highest").apply(params, x)[1])


@pytest.mark.slow
def test_under_a_mesh_that_splits_the_batch_each_device_runs_the_kernels_on_its_rows():
  """4 simulated CPU devices (a subprocess: the device count is fixed when JAX starts): the
  layer kernel (values and gradients) and the free-run kernel are partitioned along the
  batch, each device tracing the kernel for its own 2 of the 8 rows, and equal the XLA
  path; under vmap (a sweep's members) the kernels run unpartitioned."""
  script = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from seqjax.model import recurrence, rollout, sequence
    from seqjax.model.kernels import pallas_lstm, tiles
    rows = []
    padded = tiles.padded_batch
    tiles.padded_batch = lambda n: rows.append(n) or padded(n)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    split = lambda *spec: NamedSharding(mesh, P(*spec))
    k = jax.random.split(jax.random.key(0), 4)
    w_h = jax.random.normal(k[0], (5, 20)) * 0.4
    gx = jax.device_put(jax.random.normal(k[1], (6, 8, 20)), split(None, "data"))
    carry = tuple(jax.device_put(jax.random.normal(key, (8, 5)), split("data")) for key in k[2:])
    def loss(scan, w_h, gx, carry):
      (h, c), ys = scan(w_h, gx, carry)
      return jnp.sum(jnp.sin(ys)) + jnp.sum(h * c)
    kernel = lambda *a: pallas_lstm.scan(*a, interpret=True)
    xla = lambda *a: recurrence.scan(*a, precision="highest")
    got = jax.jit(jax.value_and_grad(lambda *a: loss(kernel, *a), argnums=(0, 1, 2)))(
        w_h, gx, carry)
    # Traced once for the whole batch (its shapes), then per device on its 2 rows: the
    # forward and the backward kernel.
    assert rows.count(2) == 2 and set(rows) == {2, 8}, rows
    ref = jax.value_and_grad(lambda *a: loss(xla, *a), argnums=(0, 1, 2))(w_h, gx, carry)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), got, ref)

    model = sequence.SequenceModel(hidden=6, num_layers=2, head="per_step", out_features=3,
                                 precision="highest", kernel="pallas")
    prefix = jax.device_put(jax.random.normal(k[3], (8, 5, 3)), split("data"))
    params = model.init(k[0], prefix[:1])["params"]
    rows.clear()
    preds = rollout.rollout(model, params, prefix, 7)
    assert rows.count(2) == 3 and set(rows) == {2, 8}, rows  # 2 warm-up layers, the free run
    ref = rollout.rollout(model.clone(kernel="xla"), params, prefix, 7)
    np.testing.assert_allclose(preds, ref, atol=1e-5, rtol=0)

    members = jax.vmap(lambda key: model.init(key, prefix[:1])["params"])(jax.random.split(k[1], 2))
    run = lambda m: jax.jit(jax.vmap(lambda p: rollout.rollout(m, p, prefix, 7)))(members)
    np.testing.assert_allclose(run(model), run(model.clone(kernel="xla")), atol=1e-5, rtol=0)
    print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = cli_process.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
