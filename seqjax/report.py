"""Prints a markdown table of the `results.json` files under a folder of runs.

  python -m seqjax.report runs/exp
"""

import json
import os
import sys


def rows(root: str) -> list[str]:
  out = ["| run | task | held-out metric | steps | wall (s) | compile (s) "
         "| rollout RMSE @10/50/100/200 |", "|---|---|---|---|---|---|---|"]
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "results.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    timing = os.path.join(root, name, "timing.json")
    if os.path.exists(timing):  # older runs kept their times in results.json
      with open(timing) as f:
        r |= json.load(f)
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
