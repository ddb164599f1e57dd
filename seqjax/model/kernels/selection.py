"""Which implementation runs an LSTM's recurrence: the XLA scan or a Pallas kernel.

`model.kernel` (the `kernel` option of every LSTM module):
  "xla"     `recurrence.scan`, `lax.scan` with the hand-written VJP, everywhere;
  "pallas"  `kernels.pallas_lstm.scan`: lowered through Triton on NVIDIA GPUs,
            run in Pallas' interpret mode elsewhere (correct, slow: for tests);
  "auto"    the Pallas kernel only on a platform and shape range where it was
            measured faster than the XLA scan (`PALLAS_FASTER`), else XLA.

The same choice decides a per-step model's free run (`rollout.free_run`): the
XLA loop of model steps, or `kernels.pallas_free_run`, the whole generation in
one kernel.

When a kernel fails to lower or compile on a GPU, the XLA path runs after one
warning line, instead of failing the run.

Under a mesh that splits the batch, each device runs the kernels on its own
rows (`tiles.call`); a vmapped kernel (a sweep's members) is not split, so every
device would compute every member. The kernels are measured on one device:
`auto` keeps the XLA path wherever JAX sees more than one, and "pallas" there
is the user's explicit choice.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from seqjax.model import numerics

KERNELS = ("auto", "xla", "pallas")
# What a Pallas kernel can replace: "scan", one layer's recurrence (training and
# inference); "free_run", a per-step model's generation loop (`rollout.free_run`).
JOBS = ("scan", "free_run")

# Where `auto` picks the Pallas kernel: job -> platform -> ((largest B*H, largest H), ...),
# a layer matching any row; elsewhere the XLA path. Each row covers only shapes where
# `python -m seqjax.bench` (launch/gpu_check.sh) measured the kernel faster than the XLA
# path on an NVIDIA GPU (docs/speed.md): "scan" from the train step and one layer's
# recurrence (sine's B*H = 1024 at H = 32, mean's H = 10; slower at echo's H = 50),
# "free_run" from sine's rollout (B = 1, H = 32). Larger shapes are not measured yet.
PALLAS_FASTER: dict[str, dict[str, tuple[tuple[int, int], ...]]] = {
    "scan": {"gpu": ((1024, 32),)},
    "free_run": {"gpu": ((32, 32),)},
}


def check(kernel: Any, module: str = "LSTM") -> None:
  if kernel not in KERNELS:
    raise ValueError(f"{module}: kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")


def choose(kernel: str, batch: int, hidden: int, platform: str | None = None,
           dtype: Any = jnp.float32, job: str = "scan") -> str:
  """"xla" or "pallas" for `job` (see `JOBS`) on a layer of this shape and matmul `dtype`
  on `platform` (default backend). The kernels compute in float32 or bfloat16 only: other
  dtypes run the XLA path."""
  check(kernel)
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    return "xla"
  if kernel != "auto":
    return kernel
  if jax.device_count() > 1:  # see the module docstring: measured on one device
    return "xla"
  for max_work, max_hidden in PALLAS_FASTER[job].get(numerics.platform_kind(platform), ()):
    if batch * hidden <= max_work and hidden <= max_hidden:
      return "pallas"
  return "xla"


def interpreted(platform: str | None = None) -> bool:
  """Whether the Pallas kernels run in interpret mode on `platform` (default backend):
  everywhere but a GPU, where they lower through Triton."""
  return numerics.platform_kind(platform) != "gpu"


def _compiles(what: str, program, *shapes) -> bool:
  """Compiles `program` for `shapes`; a failure is one warning line and False."""
  try:
    jax.jit(program).lower(*shapes).compile()
  except Exception as e:  # noqa: BLE001  any lowering or compiler failure
    first = (str(e).strip().splitlines() or [""])[0][:160]
    warnings.warn(f"seqjax: the Pallas LSTM kernel does not compile here for {what} "
                  f"({type(e).__name__}: {first}); running the XLA path",
                  RuntimeWarning, stacklevel=3)
    return False
  return True


@functools.cache
def compiles(steps: int, batch: int, hidden: int, dtype: Any, param_dtype: Any,
             precision: Any) -> bool:
  """Whether the layer kernel, with and without its gradient, compiles for this shape and
  these dtypes on this GPU.

  Compiled once per shape, ahead of the program that uses it; a failure warns
  (once per shape) and returns False: the layer then runs the XLA scan.
  """
  from seqjax.model.kernels import pallas_lstm
  g = 4 * hidden
  shapes = (jax.ShapeDtypeStruct((hidden, g), param_dtype),
            jax.ShapeDtypeStruct((steps, batch, g), jnp.float32),
            (jax.ShapeDtypeStruct((batch, hidden), jnp.float32),) * 2,
            jax.ShapeDtypeStruct((steps, batch), jnp.bool_))

  def loss(w_h, gx, carry, mask):
    (h, c), ys = pallas_lstm.scan(w_h, gx, carry, mask, dtype=dtype, precision=precision)
    return jnp.sum(ys) + jnp.sum(h) + jnp.sum(c)

  what = f"T={steps} B={batch} H={hidden}"
  return (_compiles(what, jax.grad(loss, argnums=(0, 1, 2)), *shapes)
          and _compiles(what, loss, *shapes))


@functools.cache
def free_run_compiles(steps: int, layers: tuple, head: tuple, activations: tuple[Any, ...],
                      carry: tuple, first_input: tuple, dtype: Any, precision: Any) -> bool:
  """Whether the free-running kernel compiles for this model and shape on this GPU.

  `layers`, `head`, `carry` and `first_input`: the operands of
  `pallas_free_run.free_run` as (tuples of) `jax.ShapeDtypeStruct`, hashable for
  the cache; `activations`: one function per head layer. Once per shape, as
  `compiles`.
  """
  from seqjax.model.kernels import pallas_free_run

  def run(layers, head, carry, first_input):
    return pallas_free_run.free_run(layers, head, activations, carry, first_input, steps,
                                    dtype=dtype, precision=precision)

  num_layers, batch, hidden = carry[0].shape
  return _compiles(f"a {steps}-step free run, B={batch} H={hidden}x{num_layers}", run,
                   layers, head, carry, first_input)
