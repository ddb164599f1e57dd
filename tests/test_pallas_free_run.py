"""The free-running Pallas kernel (a whole generation in one kernel) against the XLA loop of
model steps (interpret mode on CPU), its GPU lowering checked on this CPU, and its fallback."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.model import rollout, sequence
from seqjax.model.kernels import pallas_free_run, selection

ATOL = 1e-5  # the same float32 arithmetic ("highest") in another order


def _model(**options):
  base = dict(hidden=6, num_layers=2, head="per_step", out_features=3, precision="highest",
              kernel="pallas")
  return sequence.SequenceModel(**{**base, **options})


def _setup(model, batch=3, warmup=5, seed=0):
  prefix = jax.random.normal(jax.random.key(seed + 1), (batch, warmup, model.out_features))
  params = model.init(jax.random.key(seed), prefix)["params"]
  carry, y = model.apply({"params": params}, prefix)
  return params, carry, y[:, -1]


def _pallas_calls(fn, *args) -> int:
  return str(jax.make_jaxpr(fn)(*args)).count("pallas_call")


@pytest.mark.parametrize("options,batch", [
    pytest.param({}, 3, marks=pytest.mark.slow),  # 2 layers, O = I = 3
    ({"num_layers": 1, "hidden": 17, "out_features": 1}, 20),   # odd H, two batch blocks
    pytest.param({"head_hidden": (5, 7), "activation": "gelu", "out_activation": "tanh"}, 2,
                 marks=pytest.mark.slow),
    ({"head_hidden": (4,), "activation": "softplus", "out_activation": "sigmoid"}, 1),
    pytest.param({"head_hidden": (4,), "activation": "relu"}, 1, marks=pytest.mark.slow),
    pytest.param({"num_layers": 3, "hidden": 9, "out_features": 5}, 20,  # 3 layers, 2 blocks
                 marks=pytest.mark.slow),
], ids=["stack", "odd-h-two-blocks", "gelu-tanh", "softplus-sigmoid", "relu", "3-layers"])
def test_the_kernel_free_run_equals_the_xla_loop(options, batch):
  model = _model(**options)
  params, carry, first = _setup(model, batch)
  (h, c), ys = rollout.free_run(model, params, carry, first, 25)
  (h_ref, c_ref), ys_ref = rollout.free_run(model.clone(kernel="xla"), params, carry, first, 25)
  assert ys.shape == (batch, 25, model.out_features)
  for a, b in ((ys, ys_ref), (h, h_ref), (c, c_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=0)


def test_the_free_run_is_one_kernel_for_all_steps():
  model = _model()
  params, carry, first = _setup(model)
  run = lambda m: lambda p: rollout.free_run(m, p, carry, first, 40)  # noqa: E731
  assert _pallas_calls(run(model), params) == 1
  assert _pallas_calls(run(model.clone(kernel="xla")), params) == 0
  # auto: the kernel only where it was measured faster (sine's rollout on a GPU)
  auto = selection.choose("auto", 3, model.hidden, job="free_run") == "pallas"
  assert _pallas_calls(run(model.clone(kernel="auto")), params) == int(auto)
  assert selection.choose("auto", 3, model.hidden, "cpu", job="free_run") == "xla"


def test_rollout_with_the_kernel_equals_the_xla_rollout():
  model = _model(num_layers=1)
  params, _, _ = _setup(model)
  prefix = jax.random.normal(jax.random.key(7), (2, 9, 3))
  preds = rollout.rollout(model, params, prefix, 30)
  ref = rollout.rollout(model.clone(kernel="xla"), params, prefix, 30)
  np.testing.assert_allclose(np.asarray(preds), np.asarray(ref), atol=ATOL, rtol=0)


@pytest.mark.slow
def test_differentiating_a_kernel_free_run_takes_the_xla_loops_gradient():
  """Training with `task.free_run` differentiates the free run: the kernel is forward only,
  so the gradient is the XLA loop's, and the values still come out right."""
  model = _model(head_hidden=(4,), activation="tanh")
  params, carry, first = _setup(model)

  def loss(m, p, carry, first):
    (h, c), ys = rollout.free_run(m, p, carry, first, 12)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(h * c)

  value, grads = jax.value_and_grad(lambda *a: loss(model, *a), argnums=(0, 1, 2))(
      params, carry, first)
  value_ref, grads_ref = jax.value_and_grad(
      lambda *a: loss(model.clone(kernel="xla"), *a), argnums=(0, 1, 2))(params, carry, first)
  np.testing.assert_allclose(value, value_ref, atol=ATOL, rtol=0)
  np.testing.assert_allclose(loss(model, params, carry, first), value_ref,  # the kernel's
                             atol=ATOL, rtol=0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL, rtol=0),
               grads, grads_ref)


@pytest.mark.slow
def test_a_vmapped_free_run_runs_the_kernel_per_member():
  """A sweep vmaps the model over its members: the kernel runs under vmap."""
  model = _model()
  prefix = jnp.ones((2, 4, 3))
  members = jax.vmap(lambda k: model.init(k, prefix)["params"])(
      jax.random.split(jax.random.key(3), 3))
  run = lambda m: jax.vmap(lambda p: rollout.rollout(m, p, prefix, 10))  # noqa: E731
  np.testing.assert_allclose(np.asarray(run(model)(members)),
                             np.asarray(run(model.clone(kernel="xla"))(members)),
                             atol=ATOL, rtol=0)


def test_the_free_run_kernel_computes_in_bfloat16_with_a_float32_carry():
  model = _model(dtype=jnp.bfloat16, head_hidden=(4,))
  params, carry, first = _setup(model)
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)  # bfloat16 parameters too
  (h, c), ys = rollout.free_run(model, params, carry, first, 10)
  _, ys_ref = rollout.free_run(model.clone(kernel="xla"), params, carry, first, 10)
  assert h.dtype == c.dtype == ys.dtype == jnp.float32
  # bfloat16 operands (8 bits of mantissa) rounded in another order, fed back 10 times.
  np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_ref), atol=5e-2, rtol=0)


def test_float32_compute_on_bfloat16_parameters_equals_the_xla_loop():
  model = _model(head_hidden=(4,))
  params, carry, first = _setup(model)
  params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  _, ys = rollout.free_run(model, params, carry, first, 10)
  _, ys_ref = rollout.free_run(model.clone(kernel="xla"), params, carry, first, 10)
  np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_ref), atol=ATOL, rtol=0)


class _Doubled(sequence.SequenceModel):
  """A subclass that computes something else: the kernel must not stand in for it."""

  def __call__(self, x, carry=None, *args, **kwargs):
    carry, y = super().__call__(x, carry, *args, **kwargs)
    return carry, 2 * y


@pytest.mark.parametrize("model", [
    _model(fused=False), _model(reverse=True), _Doubled(**{
        "hidden": 6, "num_layers": 2, "head": "per_step", "out_features": 3,
        "precision": "highest", "kernel": "pallas"})], ids=["unfused", "reverse", "subclass"])
def test_models_the_kernel_does_not_cover_run_the_xla_loop(model, monkeypatch):
  """Only a plain per-step SequenceModel's structure is known to the kernel."""
  params, carry, first = _setup(model)
  calls = []
  monkeypatch.setattr(pallas_free_run, "free_run", lambda *a, **k: calls.append(a))
  _, ys = rollout.free_run(model, params, carry, first, 5)
  assert not calls and ys.shape == (3, 5, 3)


def test_a_carry_or_input_of_the_wrong_shape_gets_the_models_own_error():
  model = _model()
  params, carry, first = _setup(model, batch=3)
  with pytest.raises(ValueError, match=r"carry must be \(h, c\)"):
    rollout.free_run(model, params, carry, first[:1], 4)  # 1 input row for a carry of 3
  with pytest.raises(ValueError, match=r"carry must be \(h, c\)"):
    rollout.free_run(model, params, jax.tree.map(lambda a: a[:1], carry), first, 4)


def test_on_a_gpu_the_kernel_is_compiled_ahead_with_the_models_own_operands(monkeypatch):
  """The compile probe sees the operands the kernel will get (here the kernel is
  interpreted inside the probe, so it compiles on this CPU) and then runs the kernel."""
  monkeypatch.setattr(selection, "interpreted", lambda platform=None: False)
  monkeypatch.setattr(selection, "compiles", lambda *a: False)  # the warm-up's layers: XLA
  selection.free_run_compiles.cache_clear()
  real = pallas_free_run.free_run
  seen = []

  def interpreted(*args, **kwargs):
    seen.append(kwargs["dtype"])
    return real(*args, **{**kwargs, "interpret": True})
  monkeypatch.setattr(pallas_free_run, "free_run", interpreted)
  model = _model(head_hidden=(4,))
  params, carry, first = _setup(model.clone(kernel="xla"))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no fallback warning
    _, ys = rollout.free_run(model, params, carry, first, 6)
  selection.free_run_compiles.cache_clear()
  assert len(seen) == 2  # the probe, then the run
  _, ys_ref = rollout.free_run(model.clone(kernel="xla"), params, carry, first, 6)
  np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_ref), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_free_run_kernel_lowers_through_triton_for_a_gpu(dtype, cuda_target):
  """Sine's shape (2 x 32, I = O = 1, 200 steps) and every head activation."""
  g = 128
  layers = [(jnp.ones((1, g)), jnp.ones((32, g)), jnp.ones(g)),
            (jnp.ones((32, g)), jnp.ones((32, g)), jnp.ones(g))]
  head = [(jnp.ones((32, 8)), jnp.ones(8))] * 1 + [(jnp.ones((8, 1)), jnp.ones(1))]
  carry, first = (jnp.zeros((2, 1, 32)),) * 2, jnp.zeros((1, 1))  # made outside the target
  for name in sequence.ACTIVATIONS:
    acts = (sequence.activation(name), sequence.activation("none"))
    run = lambda carry, x: pallas_free_run.free_run(  # noqa: E731
        layers, head, acts, carry, x, 200, dtype=dtype)  # noqa: B023
    with cuda_target():
      lowered = jax.jit(run).trace(carry, first).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("triton") >= 1, name


def test_a_free_run_kernel_that_does_not_compile_falls_back_to_xla_with_one_warning(
    monkeypatch):
  monkeypatch.setattr(selection, "interpreted", lambda platform=None: False)
  monkeypatch.setattr(selection, "compiles", lambda *a: False)  # the layer kernel's own probe
  selection.free_run_compiles.cache_clear()

  def broken(*args, **kwargs):
    raise RuntimeError("Triton: out of registers\nmore detail")
  monkeypatch.setattr(pallas_free_run, "free_run", broken)
  model = _model(num_layers=1)
  params, carry, first = _setup(model.clone(kernel="xla"))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ys = [rollout.free_run(model, params, carry, first, 6)[1] for _ in range(2)]
  selection.free_run_compiles.cache_clear()
  messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
  assert len(messages) == 1 and "\n" not in messages[0]
  assert "running the XLA path" in messages[0] and "out of registers" in messages[0]
  ref = rollout.free_run(model.clone(kernel="xla"), params, carry, first, 6)[1]
  np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(ref), atol=0, rtol=0)
