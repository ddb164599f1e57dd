"""Which implementation runs an LSTM layer's recurrence: the XLA scan or the Pallas kernel.

`model.kernel` (the `kernel` option of every LSTM module):
  "xla"     `recurrence.scan`, `lax.scan` with the hand-written VJP, everywhere;
  "pallas"  `kernels.pallas_lstm.scan`: lowered through Triton on NVIDIA GPUs,
            run in Pallas' interpret mode elsewhere (correct, slow: for tests);
  "auto"    the Pallas kernel only on a platform and shape range where it was
            measured faster than the XLA scan (`PALLAS_FASTER`), else XLA.

When the kernel fails to lower or compile on a GPU, the layer runs the XLA
scan after one warning line, instead of failing the run.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from seqjax import numerics

KERNELS = ("auto", "xla", "pallas")

# Where `auto` picks the Pallas kernel: platform -> ((largest B*H, largest H), ...), a
# layer matching any row. Empty until `python -m seqjax.bench` measures the kernel faster
# than the XLA scan on a platform (launch/gpu_pallas_check.sh measures it on a GPU);
# until then `auto` is the XLA scan everywhere.
PALLAS_FASTER: dict[str, tuple[tuple[int, int], ...]] = {}


def check(kernel: Any, module: str = "LSTM") -> None:
  if kernel not in KERNELS:
    raise ValueError(f"{module}: kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")


def choose(kernel: str, batch: int, hidden: int, platform: str | None = None,
           dtype: Any = jnp.float32) -> str:
  """"xla" or "pallas" for a layer of this shape and matmul `dtype` on `platform` (default
  backend). The kernel computes in float32 or bfloat16 only: other dtypes run the scan."""
  check(kernel)
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    return "xla"
  if kernel != "auto":
    return kernel
  for max_work, max_hidden in PALLAS_FASTER.get(numerics.platform_kind(platform), ()):
    if batch * hidden <= max_work and hidden <= max_hidden:
      return "pallas"
  return "xla"


def interpreted(platform: str | None = None) -> bool:
  """Whether the Pallas kernel runs in interpret mode on `platform` (default backend):
  everywhere but a GPU, where it lowers through Triton."""
  return numerics.platform_kind(platform) != "gpu"


@functools.cache
def compiles(steps: int, batch: int, hidden: int, dtype: Any, param_dtype: Any,
             precision: Any) -> bool:
  """Whether the Pallas kernel and its gradient compile for this shape and these dtypes
  on this GPU.

  Compiled once per shape, ahead of the program that uses it; a failure warns
  (once per shape) and returns False: the layer then runs the XLA scan.
  """
  from seqjax.kernels import pallas_lstm
  g = 4 * hidden
  shapes = (jax.ShapeDtypeStruct((hidden, g), param_dtype),
            jax.ShapeDtypeStruct((steps, batch, g), jnp.float32),
            (jax.ShapeDtypeStruct((batch, hidden), jnp.float32),) * 2,
            jax.ShapeDtypeStruct((steps, batch), jnp.bool_))

  def loss(w_h, gx, carry, mask):
    (h, c), ys = pallas_lstm.scan(w_h, gx, carry, mask, dtype=dtype, precision=precision)
    return jnp.sum(ys) + jnp.sum(h) + jnp.sum(c)

  try:
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*shapes).compile()
  except Exception as e:  # noqa: BLE001  any lowering or compiler failure
    first = (str(e).strip().splitlines() or [""])[0][:160]
    warnings.warn(f"seqjax: the Pallas LSTM kernel does not compile here for T={steps} "
                  f"B={batch} H={hidden} ({type(e).__name__}: {first}); running the XLA scan",
                  RuntimeWarning, stacklevel=2)
    return False
  return True
