"""Regenerates the one table of the experiments' measured figures, and its quotes.

  python bench/figures.py --out=runs/figures                    # train what is missing
  python bench/figures.py --out=runs/figures --only=freq,mean   # (re)train some rows' runs

Each row's runs are `python -m seqjax.main` of a config, one at a time (the
times are wall times of a whole run, compile included, on an otherwise idle
machine). A run whose `results.json` exists in --out is read, not retrained.
The table, with the date, machine and JAX version, goes to `docs/results.md`;
the README and `docs/experiments.md` quote it between their `results` markers,
rewritten here, so the three never disagree.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys

from seqjax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "docs", "results.md")
QUOTES = (os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "experiments.md"))
START, END = "<!-- results: start -->", "<!-- results: end -->"

# (experiment, the seed's own number, the seed's setup in seqjax or None, seqjax's default)
ROWS = (
    ("freq, max_freq 10", "train MAE 0.050", "freq:seed", "freq"),
    ("freq, max_freq 20", "train MAE 0.146", None, "freq:max_freq=20"),
    ("freq, max_freq 30", "train MAE 0.407", None, "freq:max_freq=30"),
    ("freq, max_freq 45", "(not tried)", None, "freq:max_freq=45"),
    ("mean, L=200, 80 sequences", "does not converge", None, "mean"),
    ("mean, L=2000, 50 sequences", "does not converge", "mean:seed", "mean:length=2000"),
    ("echo, window 5, previous value", "~95-100% accuracy", "echo:seed", "echo"),
    ("echo, window 1, 5 steps back", "(not tried)", None, "echo:window=1,lag=5"),
    ("sine, next step (teacher forced)", "(train loss only)", "sine:seed", "sine"),
)
HEADER = ("| experiment | seed (its own number) | seed setup in seqjax (`:seed`, test) "
          "| seqjax default (test) | default time | command |\n"
          "|---|---|---|---|---|---|")


def _folder(config: str) -> str:
  return config.replace(":", "-").replace(",", "-").replace("=", "")


def run(out: str, config: str, retrain: bool) -> tuple[dict, dict]:
  """(results.json, timing.json) of `configs/<file>.py:<arg>` trained into `out`."""
  workdir = os.path.join(out, _folder(config))
  results = os.path.join(workdir, "results.json")
  if retrain or not os.path.exists(results):
    shutil.rmtree(workdir, ignore_errors=True)
    file, _, arg = config.partition(":")
    flag = f"--config=configs/{file}.py" + (f":{arg}" if arg else "")
    print(f"== {config}", flush=True)
    # The compilation cache off: each time is a first run's, compiling included.
    subprocess.run([sys.executable, "-m", "seqjax.main", flag, f"--workdir={workdir}",
                    "--compilation_cache="], check=True, cwd=ROOT)
  with open(results) as f, open(os.path.join(workdir, "timing.json")) as g:
    return json.load(f), json.load(g)


def metric(results: dict) -> str:
  """The test metric as the table shows it."""
  name, value = results["metric"], report.on_test(results)[results["metric"]]
  if name == "accuracy":
    return f"{100 * value:.2f}%"
  return f"{name.upper()} {value:#.2g}"


def rollout(results: dict) -> str:
  r = results["rollout"]
  return " / ".join(f"{r[f'rmse@{h}']:#.2g}" for h in (10, 50, 100, 200))


def machine() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return (f"a {cores}-core CPU ({cpu}; JAX {jax.__version__} on {jax.default_backend()}, "
          f"Python {platform.python_version()})")


def table(out: str, only: set[str]) -> str:
  lines = [HEADER]
  retrain = lambda config: config.split(":")[0] in only  # noqa: E731
  for experiment, seed_number, seed, default in ROWS:
    results, timing = run(out, default, retrain(default))
    seed_results = run(out, seed, retrain(seed))[0] if seed else None
    file, _, arg = default.partition(":")
    command = f"`configs/{file}.py" + (f":{arg}`" if arg else "`")
    lines.append(f"| {experiment} | {seed_number} | "
                 f"{metric(seed_results) if seed_results else ''} | **{metric(results)}** | "
                 f"{timing['wall_s']:.0f} s | {command} |")
    if "rollout" in results:
      lines.append(f"| sine, free-running RMSE @ 10 / 50 / 100 / 200 | \"diverge very "
                   f"quickly\" | {rollout(seed_results) if seed_results else ''} | "
                   f"**{rollout(results)}** | (same run) | {command} |")
  return "\n".join(lines)


def quote(path: str, text: str) -> None:
  """Replaces what lies between the results markers of `path` with `text`."""
  with open(path) as f:
    content = f.read()
  head, start, rest = content.partition(START)
  _, end, tail = rest.partition(END)
  if not (start and end):
    raise SystemExit(f"{path} has no {START} ... {END} block")
  with open(path, "w") as f:
    f.write(f"{head}{START}\n{text}\n{END}{tail}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder of the runs (reused when present)")
  parser.add_argument("--only", default="", help="config files whose runs are retrained "
                      "(comma-separated: freq, mean, echo, sine)")
  args = parser.parse_args()
  only = set(filter(None, args.only.split(",")))
  known = {config.split(":")[0] for row in ROWS for config in row[2:] if config}
  if only - known:
    parser.error(f"--only: unknown {sorted(only - known)}; allowed: {sorted(known)}")
  rows = table(args.out, only)
  day = datetime.date.today().isoformat()
  with open(TABLE, "w") as f:
    f.write(f"""# Measured figures

Back to the [README](../README.md). Written by `python bench/figures.py`
(the README and `docs/experiments.md` quote this table; regenerate, do not edit).

Test metrics of each experiment's default config, and of the Q&A
snippet's own setup (`:seed`), with the wall time of the default run
(compiling included: no compilation cache), one run at a time on
{machine()}, on {day}.

{START}
{rows}
{END}
""")
  for path in QUOTES:
    quote(path, rows)
  print(rows)


if __name__ == "__main__":
  main()
