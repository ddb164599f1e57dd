"""Times peers on shapes: compile (time to first step), then the median of repeated steps.

A row per (shape, peer): train-step and forward milliseconds (medians), their
ratio to the fastest peer on that shape, timesteps/s (B*T per second of
training) and the compile time. `markdown`, `write` turn rows into tables.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

from seqjax.bench.shapes import Shape


def time_calls(fn: Callable[[], None], repeats: int, min_seconds: float = 0.2) -> float:
  """Median seconds of one call of `fn`, over `repeats` rounds.

  A round runs `fn` enough times to last about `min_seconds / repeats`, so
  microsecond steps are not lost in timer noise; its time is per call.
  """
  t0 = time.perf_counter()
  fn()
  once = max(time.perf_counter() - t0, 1e-7)
  per_round = max(1, int(min_seconds / repeats / once))
  samples = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(per_round):
      fn()
    samples.append((time.perf_counter() - t0) / per_round)
  return statistics.median(samples)


def time_peer(name: str, build: Callable, shape: Shape, repeats: int, **options) -> dict:
  """Builds a peer on `shape` and times it; compile_s = build + first train step.

  A `train_step` with a `steps` attribute runs that many steps a call (a
  device-side loop); its time is divided by it.
  """
  t0 = time.perf_counter()
  train_step, forward = build(shape, **options)
  train_step()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  forward()
  forward_compile_s = time.perf_counter() - t0
  train_s = time_calls(train_step, repeats) / getattr(train_step, "steps", 1)
  forward_s = time_calls(forward, repeats)
  return {"shape": shape.name, "dims": str(shape), "peer": name, "train_ms": train_s * 1e3,
          "forward_ms": forward_s * 1e3, "compile_s": compile_s,
          "forward_compile_s": forward_compile_s,
          "train_timesteps_per_s": shape.batch * shape.time / train_s}


def add_ratios(rows: list[dict]) -> list[dict]:
  """Adds each row's train/forward time divided by the fastest peer's on its shape."""
  for shape in {r["shape"] for r in rows}:
    same = [r for r in rows if r["shape"] == shape]
    for key in ("train_ms", "forward_ms"):
      best = min(r[key] for r in same)
      for r in same:
        r[key.replace("_ms", "_ratio")] = r[key] / best
  return rows


def markdown(rows: Sequence[dict]) -> str:
  lines = ["| shape | peer | train step ms | x fastest | forward ms | x fastest | "
           "M timesteps/s (train) | compile s |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['dims']} | {r['peer']} | {r['train_ms']:.3f} | {r['train_ratio']:.2f} | "
                 f"{r['forward_ms']:.3f} | {r['forward_ratio']:.2f} | "
                 f"{r['train_timesteps_per_s'] / 1e6:.3g} | {r['compile_s']:.2f} |")
  return "\n".join(lines)


def write(rows: Sequence[dict], out_dir: str, meta: dict, name: str = "bench",
          table: str | None = None) -> list[str]:
  """Writes <name>.csv, <name>.json (rows and `meta`) and <name>.md (`table`, by default
  `markdown(rows)`); returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("csv", "json", "md")]
  with open(paths[0], "w", newline="") as f:
    fields = list(rows[0])
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  with open(paths[1], "w") as f:
    json.dump({"meta": meta, "rows": list(rows)}, f, indent=2)
  with open(paths[2], "w") as f:
    f.write((markdown(rows) if table is None else table) + "\n")
  return paths
