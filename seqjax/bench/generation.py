"""The free-running rollout row of `python -m seqjax.bench --rollout`.

Forward only, B1: sine's model (2 x LSTM(32), a per-step Dense) warms up on a
50-step prefix, then generates 200 steps, each fed back as the next input
(`rollout.rollout`, one jitted program). Each generated step is a tiny
[1, 32] recurrence step, so the time is launch and loop overhead, as in the
mean shape's train step. With `kernel="pallas"` the warm-up runs the layer kernel and the whole
free run is one kernel (`kernels.pallas_free_run`): the row measures what
fusing the generation loop saves. compile_s includes the kernels' compile
probes.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from seqjax.bench import timing
from seqjax.model import rollout, sequence

WARMUP, STEPS, HIDDEN, LAYERS = 50, 200, 32, 2
DIMS = f"sine rollout B1 W{WARMUP} N{STEPS} H{HIDDEN}x{LAYERS}"


def row(kernel: str, repeats: int, precision: str = "highest") -> dict:
  """Times the rollout with `model.kernel=kernel`; compile_s includes the first call."""
  model = sequence.SequenceModel(hidden=HIDDEN, num_layers=LAYERS, head="per_step",
                               kernel=kernel, precision=precision)
  prefix = jnp.sin(jnp.arange(WARMUP, dtype=jnp.float32) * 0.1)[None, :, None]
  params = jax.jit(model.init)(jax.random.key(0), prefix)["params"]
  generate = functools.partial(rollout.rollout, model, params, prefix, STEPS)
  t0 = time.perf_counter()
  jax.block_until_ready(generate())
  compile_s = time.perf_counter() - t0
  seconds = timing.time_calls(lambda: jax.block_until_ready(generate()), repeats)
  return {"shape": "rollout", "dims": DIMS, "peer": f"seqjax {kernel}",
          "rollout_ms": seconds * 1e3, "steps_per_s": (WARMUP + STEPS) / seconds,
          "compile_s": compile_s}


def markdown(rows: list[dict]) -> str:
  best = min(r["rollout_ms"] for r in rows)
  lines = ["| rollout | peer | ms | x fastest | steps/s | compile s |", "|---|---|---|---|---|---|"]
  lines += [f"| {r['dims']} | {r['peer']} | {r['rollout_ms']:.3f} | {r['rollout_ms'] / best:.2f} "
            f"| {r['steps_per_s']:.0f} | {r['compile_s']:.2f} |" for r in rows]
  return "\n".join(lines)
