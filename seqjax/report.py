"""Prints a markdown table of the runs and sweep grids under a folder.

  python -m seqjax.report               # everything under runs/
  python -m seqjax.report runs/freq     # one config's runs (local or gs://...)

A row per workdir with a `results.json`, at any depth: a single run
(`seqjax.main`) shows its test metric; a sweep grid (`seqjax.sweep`) the
median over its models and how many diverged.
"""

from __future__ import annotations

import numpy as np

from seqjax.config import cli, validate
from seqjax.runtime import files

HEADER = ["| run | task | test metric | steps | wall (s) | compile (s) "
          "| rollout RMSE @10/50/100/200 |", "|---|---|---|---|---|---|---|"]
# Folders of a workdir that hold no runs.
_SKIP = ("checkpoints", "checkpoints_unreadable", "tensorboard")


def _workdirs(root: files.epath.Path):
  """Folders under `root` (itself included) with a results.json, in path order."""
  if (root / "results.json").exists():
    yield root
  for child in sorted(root.iterdir(), key=lambda p: p.name):
    if child.is_dir() and child.name not in _SKIP:
      yield from _workdirs(child)


def _shown(metric: str, value: float | None) -> str:
  if value is None:  # results.json writes a NaN or infinite figure as null
    return f"{metric} not finite"
  return f"{metric} {value:.4%}" if metric == "accuracy" else f"{metric} {value:.3g}"


def on_test(entry: dict) -> dict | None:
  """A run's (or a member's) metrics on its test set from its results.json; None where
  it diverged. Older runs kept them under "held_out"."""
  return entry["test"] if "test" in entry else entry.get("held_out")


def row(name: str, results: dict, timing: dict) -> str:
  """One table row for a run's (or a population's) results.json and timing.json."""
  r = results | timing
  metric = r["metric"]
  wall = f"{r['wall_s']:.0f}" if "wall_s" in r else ""
  compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
  if "members" in r or "runs" in r:  # a population (older sweep grids: "runs")
    members = r.get("members", r.get("runs"))
    values = np.array([np.nan if on_test(m) is None else on_test(m)[metric]
                       for m in members], float)
    diverged = sum(m.get("diverged_at") is not None or bool(m.get("diverged"))
                   for m in members)
    median = float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")
    select = r.get("population", {}).get("select", "all")
    if select != "all" and on_test(r):
      shown = f"{select} {_shown(metric, on_test(r)[metric])}, "
    else:
      shown = ""
    shown += f"median {_shown(metric, median)} ({diverged}/{len(values)} diverged)"
    shown += _verdict(r, metric)
    task = f"{r.get('task', '?')} (population of {len(values)})"
    steps = r.get("steps", "")
    return f"| {name} | {task} | {shown} | {steps} | {wall} | {compile_s} |  |"
  roll = r.get("rollout")
  roll = " / ".join(f"{roll[f'rmse@{h}']:.4f}" for h in (10, 50, 100, 200)) if roll else ""
  shown = _shown(metric, on_test(r)[metric])
  shown += _verdict(r, metric)
  return (f"| {name} | {r['task']} | {shown} | {r['steps']} | {wall} | {compile_s} | {roll} |")


def _verdict(r: dict, metric: str) -> str:
  """A file-backed run's figure beside the best baseline on its test split."""
  v = r.get("verdict")
  if not v:
    return ""
  said = "beat" if v["beat"] else "tied with" if v.get("tie") else "**lost to**"
  missing = "".join(f"; {name} not computed" for name in v.get("not_computed", ()))
  return f" ({said} {v['best_baseline']}: {_shown(metric, v['baseline'])}{missing})"


def rows(root: str) -> list[str]:
  """The table for every workdir under `root` (local, or on an object store)."""
  base = files.path(root)
  out = list(HEADER)
  if not base.is_dir():
    return out
  for workdir in _workdirs(base):
    results = files.read_json(workdir / "results.json")
    timing = (files.read_json(workdir / "timing.json") if (workdir / "timing.json").exists()
              else {})  # older runs kept their times in results.json
    name = str(workdir.relative_to(base)) if workdir != base else workdir.name
    out.append(row(name, results, timing))
  return out


def main(argv: list[str]) -> None:
  roots = argv[1:] or ["runs"]
  for root in roots:
    if not files.path(root).is_dir():
      raise validate.ConfigError(f"{root}: no such folder (runs are written under runs/ "
                                 "unless --workdir says otherwise)")
  for root in roots:
    table = rows(root)
    if len(table) == len(HEADER):
      print(f"no results.json under {root}/ (runs write one when they finish)")
      continue
    print("\n".join(table))


if __name__ == "__main__":
  cli.run(main, positional=True)
