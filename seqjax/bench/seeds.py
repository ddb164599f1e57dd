"""Time to result: each `:seed` config against the same experiment in Keras 3 (JAX backend).

Both sides run as fresh processes on the same machine, one after the other,
and are timed from process start to the test metric (imports, compile,
training, evaluation; seqjax also writes its checkpoints, metrics and plots).
The Keras programs are `bench/keras_seeds/<experiment>.py`.

Each side runs twice with its own JAX persistent compilation cache, empty at
first: "cold" compiles everything (a first run), "warm" reruns the same
experiment and loads the compiled programs (seqjax.main caches by default;
Keras gets the same cache through JAX's environment variables).
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


def run_seqjax(experiment: str, quick: bool = False, cache: str = "") -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    arg = "seed,quick" if quick else "seed"
    wall, _ = _timed([sys.executable, "-m", "seqjax.main",
                      f"--config=configs/{experiment}.py:{arg}", f"--workdir={workdir}",
                      f"--compilation_cache={cache}"], env={"JAX_COMPILATION_CACHE_DIR": ""})
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  return {"wall_s": wall, "metric": results["metric"],
          "test": results["test"][results["metric"]]}


def run_keras(experiment: str, quick: bool = False, cache: str = "") -> dict:
  script = os.path.join(ROOT, "bench", "keras_seeds", f"{experiment}.py")
  wall, out = _timed([sys.executable, script] + (["--quick"] if quick else []),
                     env={"KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": cache,
                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
  result = json.loads(out.strip().splitlines()[-1])
  return {"wall_s": wall, "metric": result["metric"], "test": result["test"]}


def keras_available() -> bool:
  import importlib.util
  return importlib.util.find_spec("keras") is not None


def compare(experiments=EXPERIMENTS, quick: bool = False) -> list[dict]:
  rows, keras = [], keras_available()
  for name in experiments:
    row = {"experiment": name}
    with tempfile.TemporaryDirectory() as cache:
      for run in ("cold", "warm"):
        ours = run_seqjax(name, quick, os.path.join(cache, "seqjax"))
        row.update({f"seqjax_{run}_s": ours["wall_s"], "metric": ours["metric"],
                    f"seqjax_{run}_metric": ours["test"]})
        if keras:
          theirs = run_keras(name, quick, os.path.join(cache, "keras"))
          row.update({f"keras_{run}_s": theirs["wall_s"], f"keras_{run}_metric": theirs["test"],
                      f"{run}_ratio": ours["wall_s"] / theirs["wall_s"]})
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def markdown(rows: list[dict]) -> str:
  lines = ["| experiment (:seed) | seqjax s | Keras 3 (JAX) s | seqjax / Keras | "
           "rerun: seqjax s | Keras s | seqjax / Keras | test seqjax | test Keras |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    cells = [r["experiment"]]
    for run in ("cold", "warm"):
      cells.append(f"{r[f'seqjax_{run}_s']:.1f}")
      cells += ([f"{r[f'keras_{run}_s']:.1f}", f"{r[f'{run}_ratio']:.2f}"] if f"keras_{run}_s" in r
                else ["not installed", "-"])
    cells.append(f"{r['metric']} {r['seqjax_cold_metric']:.4g}")
    cells.append(f"{r['keras_cold_metric']:.4g}" if "keras_cold_metric" in r else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(out_dir: str, meta: dict) -> None:
  rows = compare()
  table = markdown(rows)
  print("\ntime to result, start to test metric (first run: compile included; rerun: "
        "compiled programs from the persistent cache)\n\n" + table)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "seeds.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  with open(os.path.join(out_dir, "seeds.md"), "w") as f:
    f.write(table + "\n")
