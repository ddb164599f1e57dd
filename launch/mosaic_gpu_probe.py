"""Whether the layer kernel lowers with Pallas' Mosaic GPU backend instead of Triton.

The kernel is written for Triton (`seqjax/model/kernels`); this probe hands the same
`pallas_call`s Mosaic GPU's compiler params and reports, per shape, whether they
compile on this GPU (lower for one, on a machine without), or what Mosaic refused.

  python launch/mosaic_gpu_probe.py
"""

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

from seqjax.bench.shapes import SHAPES
from seqjax.model.kernels import pallas_lstm, tiles


def _mosaic_params(interpret, num_warps=4):
  del num_warps  # Mosaic GPU schedules warpgroups itself
  return {} if interpret else {"compiler_params": plgpu.CompilerParams()}


def probe(hidden: int, steps: int, batch: int) -> str:
  w_h = jnp.ones((hidden, 4 * hidden))
  gx = jnp.ones((steps, batch, 4 * hidden))
  carry = (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))
  program = jax.jit(lambda w, g: pallas_lstm.scan(w, g, carry, None, interpret=False))
  try:
    if jax.default_backend() == "gpu":
      program.lower(w_h, gx).compile()
      return "compiles"
    device = jax.sharding.AbstractDevice(device_kind="NVIDIA H100", num_cores=None,
                                         platform="gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh(
        (1,), ("x",), abstract_device=device)):
      program.trace(w_h, gx).lower(lowering_platforms=("cuda",))
    return "lowers"
  except Exception as e:  # noqa: BLE001  the probe reports any refusal
    lines = [line for line in str(e).splitlines() if line.strip()]
    if isinstance(e, AssertionError) and not lines:  # pallas_call.gpu_lowering's own check
      lines = ["pallas_call has no Mosaic GPU lowering rule in this JAX"]
    return f"refused: {type(e).__name__}: {' | '.join(lines[:3])[:400]}"


if __name__ == "__main__":
  tiles.compiler_params = _mosaic_params
  print(f"JAX {jax.__version__} on {jax.default_backend()}")
  for name in ("mean", "freq", "wide"):
    s = SHAPES[name]
    print(f"mosaic_gpu {s}: {probe(s.hidden, s.time, s.batch)}")
  print(f"mosaic_gpu H16 T2 B16: {probe(16, 2, 16)}")
