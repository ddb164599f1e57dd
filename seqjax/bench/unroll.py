"""`python -m seqjax.bench --unroll=1,4,8,16,32,64,128`: the scan unroll, measured.

For each shape, seqjax's train step (in a device-side loop, as `seqjax.main`
trains) at each unroll, beside `lstm.auto_unroll`'s choice for this platform.
The table says how far the automatic choice is from the best: the figures
behind `lstm.UNROLL_TABLE`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from seqjax.bench import peers, timing
from seqjax.bench.shapes import Shape
from seqjax.model import lstm


def sweep(shapes: Sequence[Shape], unrolls: Sequence[int], repeats: int,
          precision: str = "highest") -> list[dict]:
  """A row per (shape, unroll) with `unroll` and `auto` (this platform's choice) added."""
  rows = []
  for shape in shapes:
    auto = lstm.auto_unroll(shape.time, shape.batch, shape.hidden)
    for unroll in sorted(set(unrolls) | {auto}):
      build = functools.partial(peers.seqjax_lstm, unroll=unroll, precision=precision,
                                steps_per_call=peers.LOOP_STEPS)
      row = timing.time_peer(f"seqjax device loop, unroll {unroll}", build, shape, repeats)
      row.update(unroll=unroll, auto=unroll == auto)
      print(json.dumps(row), flush=True)
      rows.append(row)
  return timing.add_ratios(rows)


def markdown(rows: Sequence[dict]) -> str:
  """Train step by unroll; the automatic choice in bold, and its distance from the best."""
  lines = ["| shape | unroll | train step ms | x best | compile s |", "|---|---|---|---|---|"]
  for r in rows:
    mark = "**" if r["auto"] else ""
    lines.append(f"| {r['dims']} | {mark}{r['unroll']}{' (auto)' if r['auto'] else ''}{mark} | "
                 f"{r['train_ms']:.3f} | {r['train_ratio']:.2f} | {r['compile_s']:.2f} |")
  return "\n".join(lines)


def summary(rows: Sequence[dict]) -> list[str]:
  """One line per shape: the best unroll and the automatic choice's ratio to it."""
  lines = []
  for dims in dict.fromkeys(r["dims"] for r in rows):
    same = [r for r in rows if r["dims"] == dims]
    best = min(same, key=lambda r: r["train_ms"])
    auto = next(r for r in same if r["auto"])
    lines.append(f"{dims}: best unroll {best['unroll']} ({best['train_ms']:.3f} ms); "
                 f"auto {auto['unroll']} is {auto['train_ratio']:.2f}x the best")
  return lines
