"""Peak memory of one long-sequence train step (T=10000, B=64, H=256), with and without remat.

Each variant runs in a fresh process (peak RSS is per process): build, one
compiling step, one timed step, then `ru_maxrss`. On a GPU the device's peak
bytes in use are reported as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import jax
from seqjax.model import lstm
from seqjax.bench import peers, shapes
shape = shapes.SHAPES[sys.argv[1]]
remat = int(sys.argv[2])
train_step, _ = peers.seqjax_lstm(shape, remat=remat)
t0 = time.perf_counter(); train_step(); first = time.perf_counter() - t0
t0 = time.perf_counter(); train_step(); step = time.perf_counter() - t0
stats = jax.devices()[0].memory_stats() or {}
print(json.dumps({"shape": str(shape), "remat": remat, "first_step_s": first, "step_s": step,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "device_peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30}))
"""


def measure(shape_name: str, remat: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", CHILD, shape_name, str(remat)], capture_output=True,
                        text=True)
  if proc.returncode:
    return {"shape": shape_name, "remat": remat, "error": proc.stderr.strip().splitlines()[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(out_dir: str, meta: dict, shape_name: str = "long") -> list[dict]:
  from seqjax.bench import shapes
  from seqjax.model import lstm
  s = shapes.SHAPES[shape_name]
  rows = [measure(shape_name, lstm.auto_remat(s.time, s.batch, s.hidden)), measure(shape_name, 0)]
  lines = ["| shape | remat chunk | peak RSS GiB | device peak GiB | step s | first step s |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['shape']} | {r['remat']} | failed: {r['error'][:80]} | | | |")
    else:
      lines.append(f"| {r['shape']} | {r['remat'] or 'off'} | {r['peak_rss_gib']:.2f} | "
                   f"{r['device_peak_gib']:.2f} | {r['step_s']:.1f} | {r['first_step_s']:.1f} |")
  print("\n".join(lines))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "memory.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  return rows
