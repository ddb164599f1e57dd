"""Matmul precision: what a float32 matmul means on each backend, and how to ask for more.

A float32 matmul is float32 arithmetic on a CPU, but by default TF32 (10
explicit mantissa bits) on NVIDIA Ampere and newer GPUs, and one bfloat16 pass
(7 bits) on a TPU. `jax.lax.Precision` picks the arithmetic per matmul:

| precision | CPU     | NVIDIA GPU (Ampere+)        | TPU                  |
|-----------|---------|-----------------------------|----------------------|
| default   | float32 | TF32                        | 1 bfloat16 pass      |
| high      | float32 | TF32 or 3 bfloat16 passes   | 3 bfloat16 passes    |
| highest   | float32 | float32                     | float32 (6 passes)   |

seqjax applies one precision to every matmul of the LSTM and its head, forward
and backward (`model.precision`, or the modules' `precision` argument).
"""

from __future__ import annotations

from typing import Any

import jax

# A matmul precision: a `jax.lax.Precision`, its name, or None for JAX's
# `jax_default_matmul_precision` (the backend's default unless set).
Precision = Any
PRECISIONS = ("default", "high", "highest")

# Explicit mantissa bits of a float32 operand as each backend rounds it, per precision.
_MANTISSA_BITS = {
    "cpu": {"default": 23, "high": 23, "highest": 23},
    "gpu": {"default": 10, "high": 10, "highest": 23},
    "tpu": {"default": 7, "high": 16, "highest": 23},
}


def canonical_precision(precision: Precision) -> jax.lax.Precision | None:
  """`precision` as a `jax.lax.Precision` (None stays None); a bad name is a ValueError."""
  if precision is None or isinstance(precision, jax.lax.Precision):
    return precision
  try:
    return jax.lax.Precision(precision)
  except ValueError:
    raise ValueError(f"precision: unknown {precision!r}; allowed: {', '.join(PRECISIONS)}, "
                     "a jax.lax.Precision or None") from None


def _name(precision: Precision) -> str:
  p = canonical_precision(precision)
  if p is None:  # JAX's global default, itself a name or unset (the backend's default)
    p = canonical_precision(jax.config.jax_default_matmul_precision or "default")
  return p.name.lower()


def platform_kind(platform: str | None = None) -> str:
  """`platform` (default `jax.default_backend()`) with "cuda" and "rocm" as "gpu"."""
  platform = platform or jax.default_backend()
  return "gpu" if platform in ("cuda", "rocm") else platform


def mantissa_bits(precision: Precision, platform: str | None = None) -> int:
  """Explicit mantissa bits a float32 matmul operand keeps at `precision` on `platform`.

  `platform`: "cpu", "gpu" (an NVIDIA Ampere or newer GPU; "cuda" and "rocm" count as
  gpu) or "tpu"; default `jax.default_backend()`. Older GPUs keep 23 at every
  precision: this is the most rounding a backend may do.
  """
  return _MANTISSA_BITS.get(platform_kind(platform), _MANTISSA_BITS["tpu"])[_name(precision)]


def unit_roundoff(precision: Precision, platform: str | None = None) -> float:
  """The relative rounding error of one matmul operand: 2^-(mantissa bits + 1).

  Tolerances of comparisons between code paths follow from it (tests).
  """
  return 2.0 ** -(mantissa_bits(precision, platform) + 1)


def describe(precision: Precision, platform: str | None = None) -> str:
  """E.g. "highest (float32 operands, 23-bit mantissa)" for a precision on a platform."""
  bits = mantissa_bits(precision, platform)
  kind = {23: "float32", 16: "3 bfloat16 passes", 10: "TF32", 7: "one bfloat16 pass"}[bits]
  return f"{_name(precision)} ({kind} operands, {bits}-bit mantissa)"
