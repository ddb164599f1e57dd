"""Prints a markdown table of the `results.json` files under a folder of runs.

  python -m seqjax.report runs/exp
"""

import sys

from seqjax import files


def rows(root: str) -> list[str]:
  """`root`: a folder of run workdirs, local or on an object store (gs://...)."""
  out = ["| run | task | held-out metric | steps | wall (s) | compile (s) "
         "| rollout RMSE @10/50/100/200 |", "|---|---|---|---|---|---|---|"]
  for run in sorted(files.path(root).iterdir(), key=lambda p: p.name):
    name = run.name
    if not (run / "results.json").exists():
      continue
    r = files.read_json(run / "results.json")
    if (run / "timing.json").exists():  # older runs kept their times in results.json
      r |= files.read_json(run / "timing.json")
    metric = r["metric"]
    value = r["held_out"][metric]
    shown = f"{metric} {value:.4%}" if metric == "accuracy" else f"{metric} {value:.3g}"
    roll = r.get("rollout")
    roll = " / ".join(f"{roll[f'rmse@{h}']:.4f}" for h in (10, 50, 100, 200)) if roll else ""
    out.append(f"| {name} | {r['task']} | {shown} | {r['steps']} | {r['wall_s']:.0f} | "
               f"{r['compile_s']:.1f} | {roll} |")
  return out


if __name__ == "__main__":
  print("\n".join(rows(sys.argv[1] if len(sys.argv) > 1 else "runs")))
