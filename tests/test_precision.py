"""The matmul precision policy (`model.precision`), right on every backend.

Every matmul of the model, forward and backward, carries the precision asked
for; at "highest" the LSTM is float32 arithmetic on any backend, and at the
backend's "default" its error stays within what that backend's rounding
allows (TF32 on recent GPUs, one bfloat16 pass on TPU). Tolerances follow from
`numerics.unit_roundoff`, not from a number tuned on one machine.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.config import configlib, validate
from seqjax.model import numerics, sequence
from seqjax.train import planning

T, B, IN, H = 20, 3, 2, 8


def _model_and_inputs(precision, **kw):
  model = sequence.SequenceModel(hidden=H, num_layers=2, head_hidden=(7,), out_features=3,
                               precision=precision, **kw)
  x = jax.random.normal(jax.random.key(1), (B, T, IN))
  params = model.init(jax.random.key(0), x)["params"]
  return model, params, x


def _dot_precisions(jaxpr, found):
  """The `precision` of every dot_general in `jaxpr` and the jaxprs nested in it."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        if hasattr(sub, "eqns"):
          _dot_precisions(sub, found)
        elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
          _dot_precisions(sub.jaxpr, found)
  return found


@pytest.mark.parametrize("precision,remat,masked", [
    ("highest", 0, False), ("default", 0, True), ("high", 4, True)])
def test_every_matmul_forward_and_backward_has_the_precision(precision, remat, masked):
  model, params, x = _model_and_inputs(precision, remat=remat)
  mask = (jnp.arange(T)[None] < jnp.array([[T], [5], [11]])) if masked else None

  def loss(params, x):
    (h, c), y = model.apply({"params": params}, x, mask=mask)
    return jnp.sum(y ** 2) + jnp.sum(h * c)

  found = _dot_precisions(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x).jaxpr, [])
  expected = numerics.canonical_precision(precision)
  # forward: 2 layers x (projection, recurrence) + 2 head layers; backward: more
  assert len(found) >= 12
  assert set(found) == {(expected, expected)}


@pytest.mark.parametrize("masked", [False, True])
def test_gpu_lowering_carries_the_precision(masked):
  """The program XLA receives for a GPU asks for float32 matmuls (lowered on this CPU),
  also where the loops stop at the batch's longest sequence."""
  model, params, x = _model_and_inputs("highest")
  mask = (jnp.arange(T)[None] < jnp.array([[14], [5], [11]])) if masked else None
  loss = lambda p: jnp.sum(model.apply({"params": p}, x, mask=mask)[1])
  text = jax.jit(jax.grad(loss)).trace(params).lower(lowering_platforms=("cuda",)).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*", text)
  assert len(dots) >= 6
  assert all("precision = [HIGHEST, HIGHEST]" in d for d in dots), dots


def _numpy_lstm(params, x):
  """The stacked LSTM and head in float64 numpy: the reference of the tests below."""
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  seq = np.asarray(x, np.float64)
  for layer in range(2):
    cell = p["lstm"][f"layer{layer}"]["cell"]
    h = c = np.zeros((B, H))
    outs = []
    for t in range(T):
      z = seq[:, t] @ cell["input_kernel"] + cell["bias"] + h @ cell["recurrent_kernel"]
      i, f, g, o = np.split(z, 4, axis=-1)
      c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
      h = sigmoid(o) * np.tanh(c)
      outs.append(h)
    seq = np.stack(outs, 1)
  hidden = np.maximum(h @ p["head"]["Dense_0"]["kernel"] + p["head"]["Dense_0"]["bias"], 0)
  return seq, hidden @ p["head"]["Dense_1"]["kernel"] + p["head"]["Dense_1"]["bias"]


@pytest.mark.parametrize("precision", ["highest", "default"])
def test_error_against_float64_is_within_the_backends_rounding(precision):
  """At "highest" float32 everywhere; at "default" what the backend rounds to.

  Each step's gates carry the rounding of their matmul operands; the cell
  state adds them up over the T steps (the forget gate is below 1), so the
  bound is a small multiple of T times the unit roundoff.
  """
  model, params, x = _model_and_inputs(precision)
  (h, _), y = model.apply({"params": params}, x)
  seq, y_ref = _numpy_lstm(params, x)
  bound = 8 * T * numerics.unit_roundoff(precision)
  np.testing.assert_allclose(np.asarray(h[-1]), seq[:, -1], atol=bound, rtol=0)
  np.testing.assert_allclose(np.asarray(y), y_ref, atol=bound, rtol=0)


def test_unit_roundoff_by_backend():
  assert numerics.unit_roundoff("highest", "gpu") == 2.0 ** -24
  assert numerics.unit_roundoff("default", "gpu") == 2.0 ** -11  # TF32
  assert numerics.unit_roundoff("default", "tpu") == 2.0 ** -8  # one bfloat16 pass
  assert numerics.unit_roundoff("default", "cpu") == 2.0 ** -24
  assert numerics.describe("default", "cuda").startswith("default (TF32")


def test_bad_precision_is_a_clear_error():
  config = configlib.base_config()
  config.model.precision = "fast"
  with pytest.raises(validate.ConfigError, match="model.precision='fast'.*highest"):
    planning.validate_config(config)
  with pytest.raises(ValueError, match="precision: unknown 'fast'"):
    sequence.SequenceModel(hidden=2, precision="fast").init(jax.random.key(0), jnp.ones((1, 2, 1)))
