"""`python -m seqjax.bench --kernel_tuning`: the Pallas layer kernel at each tuning.

For each shape, one layer's recurrence alone (projected inputs in, outputs
out): the XLA scan (`recurrence.scan`, the automatic unroll) and the Pallas
kernel (`kernels.pallas_lstm`) at each `Tuning`: warps per program, and W_h's
gate tiles held across the time loop or loaded every step. Forward (no
gradient: inference) and forward + backward (the gradient of the outputs'
sum with respect to W_h and the inputs) in ms, each with its ratio to the
scan. The figures behind `pallas_lstm.default_tuning` and the "scan" rows of
`selection.PALLAS_FASTER`; a GPU's numbers (elsewhere the kernel is
interpreted: a check that the rows run, not a speed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from seqjax.bench import timing
from seqjax.bench.shapes import Shape
from seqjax.model import lstm, recurrence
from seqjax.model.kernels import pallas_lstm, selection, tiles

WARPS = (1, 2, 4, 8)
# Held W_h tiles are timed up to twice the default's limit (`tiles.RESIDENT_FLOATS`,
# Hp = 64), to see what spilling costs; at Hp = 256 they cannot compile.
MAX_HELD_HP = 128


def tunings(hidden: int) -> list[pallas_lstm.Tuning | None]:
  """None (the XLA scan), then every tuning worth compiling for this H: held tiles up to
  `MAX_HELD_HP`; every warp count on a GPU, 4 when interpreted (where warps mean nothing)."""
  hp = tiles.padded(hidden)
  warps = (4,) if selection.interpreted() else WARPS
  rows = [pallas_lstm.Tuning(w, resident) for resident in (True, False) for w in warps
          if not (resident and hp > MAX_HELD_HP)]
  return [None, *rows]


def _programs(shape: Shape, tuning: pallas_lstm.Tuning | None, precision: str):
  g = 4 * shape.hidden
  keys = jax.random.split(jax.random.key(0), 2)
  w_h = jax.random.normal(keys[0], (shape.hidden, g)) * 0.3
  gx = jax.random.normal(keys[1], (shape.time, shape.batch, g))
  carry = lstm.zero_carry((shape.batch,), shape.hidden)
  if tuning is None:
    unroll = lstm.auto_unroll(shape.time, shape.batch, shape.hidden)
    run = lambda w, x: recurrence.scan(  # noqa: E731
        w, x, carry, unroll=unroll, precision=precision)
  else:
    run = lambda w, x: pallas_lstm.scan(  # noqa: E731
        w, x, carry, precision=precision, interpret=selection.interpreted(), tuning=tuning)
  forward = jax.jit(lambda w, x: run(w, x)[1])
  both = jax.jit(jax.grad(lambda w, x: jnp.sum(run(w, x)[1]), argnums=(0, 1)))
  return (w_h, gx), forward, both


def sweep(shapes: Sequence[Shape], repeats: int, precision: str = "highest") -> list[dict]:
  """A row per (shape, tuning); a tuning that does not compile gets its error instead."""
  rows = []
  for shape in shapes:
    scan_ms = {}
    default = pallas_lstm.default_tuning(tiles.padded(shape.hidden))
    for tuning in tunings(shape.hidden):
      row = {"dims": f"{shape} (layer 0)", "kernel": "xla scan" if tuning is None else
             f"pallas, {tuning.num_warps} warps, W_h {'held' if tuning.resident else 'loaded'}",
             "default": tuning == default}
      try:
        args, forward, both = _programs(shape, tuning, precision)
        t0 = time.perf_counter()
        jax.block_until_ready((forward(*args), both(*args)))
        row["compile_s"] = time.perf_counter() - t0
        for name, fn in (("forward_ms", forward), ("fwd_bwd_ms", both)):
          row[name] = timing.time_calls(lambda fn=fn: jax.block_until_ready(fn(*args)),
                                        repeats) * 1e3
      except Exception as e:  # noqa: BLE001  a tuning that does not compile is a result too
        row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
      if tuning is None:
        scan_ms = {k: row[k] for k in ("forward_ms", "fwd_bwd_ms") if k in row}
      for name in ("forward_ms", "fwd_bwd_ms"):
        if name in row and name in scan_ms:
          row[name.replace("_ms", "_x_scan")] = row[name] / scan_ms[name]
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def markdown(rows: Sequence[dict]) -> str:
  """The kernel by tuning; the default tuning in bold."""
  lines = ["| shape | kernel | forward ms | x scan | fwd+bwd ms | x scan | compile s |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    name = f"**{r['kernel']} (default)**" if r["default"] else r["kernel"]
    if "error" in r:
      lines.append(f"| {r['dims']} | {name} | {r['error']} | | | | |")
      continue
    lines.append(f"| {r['dims']} | {name} | {r['forward_ms']:.3f} | "
                 f"{r.get('forward_x_scan', 1.0):.2f} | {r['fwd_bwd_ms']:.3f} | "
                 f"{r.get('fwd_bwd_x_scan', 1.0):.2f} | {r['compile_s']:.2f} |")
  return "\n".join(lines)
