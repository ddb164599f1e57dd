"""Stateful, free-running generation with an explicit carry.

Shape letters: B independent rollouts, W warm-up steps, N generated steps,
I inputs, O outputs (generation feeds outputs back, so O == I), L layers,
H hidden.

Everything is a pure function of (params, carry, inputs): "stateful" means the
caller passes the carry back in. `rollout` is one jitted program: the warm-up
is one scan over the true prefix, the free run one `lax.scan` whose step feeds
its own prediction back as the next input, or, where `model.kernel` selects
it, one Pallas kernel that runs the whole free run (`kernels.pallas_free_run`).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.model import lstm, sequence
from seqjax.model.kernels import pallas_free_run, selection
from seqjax.model.numerics import canonical_precision


def _unwrap(params):
  """The parameters, from themselves or from the variables `init` returns ({"params": ...})."""
  if hasattr(params, "keys") and set(params.keys()) == {"params"}:
    return params["params"]
  return params


BIDIRECTIONAL_ERROR = ("a bidirectional LSTM reads a whole sequence before its first output, "
                       "so it cannot run step by step (rollout, Stream): use one with "
                       "bidirectional=False")


def step(model, params, carry: lstm.Carry | None, chunk: jax.Array) -> tuple[lstm.Carry, jax.Array]:
  """Runs a per-step model on a chunk [B, t, I] from `carry`; returns (carry, y [B, t, O]).

  `params`: the model's parameters, or the variables `model.init` returns
  ({"params": ...}); every function here takes either.
  """
  if getattr(model, "bidirectional", False):
    raise ValueError(BIDIRECTIONAL_ERROR)
  return model.apply({"params": _unwrap(params)}, chunk, carry)


def layout(params) -> tuple[int, int]:
  """(num_layers, hidden) of the LSTM in `params` (or in `init`'s variables): one
  `recurrent_kernel` [H, 4H] a layer."""
  kernels = {jax.tree_util.keystr(path): a
             for path, a in jax.tree_util.tree_leaves_with_path(_unwrap(params))
             if jax.tree_util.keystr(path).endswith("['recurrent_kernel']")}
  if not kernels:
    raise ValueError("no LSTM in these params (no 'recurrent_kernel')")
  if any("_reverse']" in path for path in kernels):
    raise ValueError(BIDIRECTIONAL_ERROR)
  return len(kernels), int(next(iter(kernels.values())).shape[0])


def free_run(model, params, carry: lstm.Carry, first_input: jax.Array,
             steps: int) -> tuple[lstm.Carry, jax.Array]:
  """Generates `steps` outputs, each fed back as the next input.

  A `sequence.SequenceModel` whose `kernel` selects Pallas for this job
  (`kernels.selection`, "free_run") generates in one kernel
  (`kernels.pallas_free_run`); differentiated, it takes the XLA loop's gradient.
  Every other model runs the XLA loop: a `lax.scan` of model steps.

  Args:
    model: a per-step model `(x [B, 1, I], carry) -> (carry, y [B, 1, O])`.
    params: its parameters.
    carry: the carry after the last true input.
    first_input: the input of the first generated step, [B, I].
    steps: N.

  Returns:
    (final carry, outputs [B, N, O]).
  """
  if steps > 0 and _runs_in_a_kernel(model, params, carry, first_input, steps):
    return _kernel_free_run(model, steps, _unwrap(params), carry, first_input)
  return _scanned_free_run(model, params, carry, first_input, steps)


def _scanned_free_run(model, params, carry, first_input, steps):
  def body(state, _):
    carry, x = state
    carry, y = step(model, params, carry, x[:, None])
    return (carry, y[:, 0]), y[:, 0]

  (carry, _), ys = jax.lax.scan(body, (carry, first_input), None, length=steps)
  return carry, jnp.swapaxes(ys, 0, 1)


def _runs_in_a_kernel(model, params, carry, first_input, steps) -> bool:
  """Whether this free run goes to the Pallas kernel (see `free_run`)."""
  # Exactly a SequenceModel: a subclass may compute something else than the kernel does.
  if not (type(model) is sequence.SequenceModel and model.head == "per_step"
          and not model.bidirectional and not model.reverse and model.fused):
    return False
  batch = jnp.shape(first_input)[0]
  if (jnp.shape(first_input) != (batch, model.out_features)
      or any(jnp.shape(a) != (model.num_layers, batch, model.hidden) for a in carry)):
    return False  # the XLA loop says what is wrong, in the model's own words
  if selection.choose(model.kernel, batch, model.hidden, dtype=model.dtype,
                      job="free_run") != "pallas":
    return False
  if selection.interpreted():
    return True  # interpreted, the kernel is plain JAX: nothing to compile ahead
  layers, head, acts = _kernel_operands(model, params)
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))  # noqa: E731
  nested = lambda pairs: tuple(tuple(map(spec, p)) for p in pairs)  # noqa: E731  hashable
  return selection.free_run_compiles(
      steps, nested(layers), nested(head), acts, tuple(map(spec, carry)), spec(first_input),
      jnp.dtype(model.dtype), canonical_precision(model.precision))


def _kernel_operands(model, params):
  """(layers, head, activations) of `pallas_free_run.free_run` from a SequenceModel's params."""
  cells = [params["lstm"][f"layer{i}"]["cell"] for i in range(model.num_layers)]
  layers = [(c["input_kernel"], c["recurrent_kernel"], c["bias"]) for c in cells]
  dense = [params["head"][f"Dense_{j}"] for j in range(len(model.head_hidden) + 1)]
  acts = [sequence.activation(model.activation)] * len(model.head_hidden)
  return (layers, [(d["kernel"], d["bias"]) for d in dense],
          (*acts, sequence.activation(model.out_activation)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _kernel_free_run(model, steps, params, carry, first_input):
  layers, head, acts = _kernel_operands(model, params)
  carry, ys = pallas_free_run.free_run(
      layers, head, acts, carry, first_input, steps, dtype=model.dtype,
      precision=model.precision, interpret=selection.interpreted())
  return carry, jnp.swapaxes(ys, 0, 1)


def _kernel_free_run_fwd(model, steps, params, carry, first_input):
  # Differentiated: the XLA loop's values and its gradient (the kernel is forward only).
  return jax.vjp(lambda p, c, x: _scanned_free_run(model, p, c, x, steps),
                 params, carry, first_input)


def _kernel_free_run_bwd(model, steps, vjp, cotangents):
  del model, steps
  return vjp(cotangents)


_kernel_free_run.defvjp(_kernel_free_run_fwd, _kernel_free_run_bwd)


@functools.partial(jax.jit, static_argnums=(0, 3))
def rollout(model, params, prefix: jax.Array, steps: int,
            carry: lstm.Carry | None = None) -> jax.Array:
  """Warms up on a true prefix, then free-runs.

  Args:
    model: a per-step next-value model (static: one compilation per shape).
    params: its parameters.
    prefix: true values [B, W, I].
    steps: N, the number of values to generate after the prefix.
    carry: carry before the prefix (zeros when None).

  Returns:
    [B, N, O]: output n predicts prefix position W + n. Output 0 is the
    prediction from the last true value; each later one is fed the previous.
  """
  if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
    raise ValueError(f"rollout: steps must be an integer >= 1 (values to generate); got "
                     f"{steps!r}")
  if jnp.ndim(prefix) != 3 or jnp.shape(prefix)[1] < 1:
    raise ValueError(f"rollout: prefix must be [batch, time >= 1, features]; got shape "
                     f"{jnp.shape(prefix)}")
  carry, y = step(model, params, carry, prefix)
  first = y[:, -1]
  _, rest = free_run(model, params, carry, first, steps - 1)
  return jnp.concatenate([first[:, None], rest], axis=1)


class Stream:
  """Feeds an unbounded sequence chunk by chunk, carrying the state between calls.

  The seed echo's stateful Keras LSTM, as a thin convenience over `step`:
  the carry is a plain attribute the caller can read, replace or `reset`.
  """

  def __init__(self, model, params, batch_size: int, num_layers: int | None = None,
               hidden: int | None = None):
    """`num_layers` and `hidden` are read from `params`; given, they are checked."""
    layers, width = layout(params)
    for name, given, found in (("num_layers", num_layers, layers), ("hidden", hidden, width)):
      if given is not None and given != found:
        raise ValueError(f"Stream: {name}={given}, but the params hold an LSTM with "
                         f"{name}={found}")
    self._model, self._params = model, params
    self._shape = (layers, batch_size)
    self._hidden = width
    self._step = jax.jit(functools.partial(step, model))
    self.reset()

  def reset(self) -> None:
    """Back to the zero carry (Keras `reset_states`)."""
    self.carry = lstm.zero_carry(self._shape, self._hidden)

  def __call__(self, chunk: jax.Array) -> jax.Array:
    """chunk [B, t, I] -> outputs [B, t, O]; the carry moves on by t steps."""
    self.carry, y = self._step(self._params, self.carry, chunk)
    return y


def horizon_rmse(preds: jax.Array, truth: jax.Array, horizons) -> dict[str, float]:
  """RMSE over rollouts of the error at each horizon h (step h of the free run).

  Args:
    preds, truth: [B, N, O].
    horizons: steps (1-based) to report, each <= N.
  """
  # On the host: a few eager jnp ops would each compile an XLA program first.
  err = np.sqrt(np.mean((np.asarray(preds) - np.asarray(truth)) ** 2, axis=(0, 2)))  # [N]
  return {f"rmse@{h}": float(err[h - 1]) for h in horizons}
