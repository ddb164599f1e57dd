"""Time to result: each `:seed` config against the same experiment in Keras 3 (JAX backend).

Both sides run as fresh processes on the same machine, one after the other,
and are timed from process start to the held-out metric (imports, compile,
training, evaluation; seqjax also writes its checkpoints, metrics and plots).
The Keras programs are `bench/keras_seeds/<experiment>.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import seqjax

EXPERIMENTS = ("freq", "sine", "mean", "echo")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(seqjax.__file__)))


def _timed(command: list[str], env: dict | None = None) -> tuple[float, str]:
  t0 = time.perf_counter()
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, **(env or {})))
  wall = time.perf_counter() - t0
  if proc.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
  return wall, proc.stdout


def run_seqjax(experiment: str, quick: bool = False) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    arg = "seed,quick" if quick else "seed"
    wall, _ = _timed([sys.executable, "-m", "seqjax.main",
                      f"--config=configs/{experiment}.py:{arg}", f"--workdir={workdir}"])
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  return {"wall_s": wall, "metric": results["metric"],
          "held_out": results["held_out"][results["metric"]]}


def run_keras(experiment: str, quick: bool = False) -> dict:
  script = os.path.join(ROOT, "bench", "keras_seeds", f"{experiment}.py")
  wall, out = _timed([sys.executable, script] + (["--quick"] if quick else []),
                     env={"KERAS_BACKEND": "jax"})
  result = json.loads(out.strip().splitlines()[-1])
  return {"wall_s": wall, "metric": result["metric"], "held_out": result["held_out"]}


def keras_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("keras") is not None


def compare(experiments=EXPERIMENTS, quick: bool = False) -> list[dict]:
  rows = []
  for name in experiments:
    ours = run_seqjax(name, quick)
    row = {"experiment": name, "seqjax_s": ours["wall_s"], "metric": ours["metric"],
           "seqjax_metric": ours["held_out"]}
    if keras_available():
      theirs = run_keras(name, quick)
      row.update(keras_s=theirs["wall_s"], keras_metric=theirs["held_out"],
                 ratio=ours["wall_s"] / theirs["wall_s"])
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def markdown(rows: list[dict]) -> str:
  lines = ["| experiment (:seed) | seqjax s | Keras 3 (JAX) s | seqjax / Keras | held-out seqjax | "
           "held-out Keras |", "|---|---|---|---|---|---|"]
  for r in rows:
    keras = (f"{r['keras_s']:.1f} | {r['ratio']:.2f}" if "keras_s" in r else "not installed | -")
    their_metric = f"{r['keras_metric']:.4g}" if "keras_metric" in r else "-"
    lines.append(f"| {r['experiment']} | {r['seqjax_s']:.1f} | {keras} | "
                 f"{r['metric']} {r['seqjax_metric']:.4g} | {their_metric} |")
  return "\n".join(lines)


def main(out_dir: str, meta: dict) -> None:
  rows = compare()
  table = markdown(rows)
  print("\ntime to result, start to held-out metric (compile included)\n\n" + table)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "seeds.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  with open(os.path.join(out_dir, "seeds.md"), "w") as f:
    f.write(table + "\n")
