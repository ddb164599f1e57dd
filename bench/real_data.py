"""The default model on real public datasets, beside the field's baselines.

  pip download sktime --no-deps -d /tmp/sk && unzip -q /tmp/sk/sktime-*.whl -d /tmp/sk
  python bench/real_data.py --data=/tmp/sk/sktime/datasets/data --out=runs/real_data

The sktime wheel ships UCR/UEA `.ts` files and a few series as `.csv`. Each
dataset is one run of `python -m seqjax.main --config=configs/data.py[:kind]`
with its defaults, on the official train/test split: classes and targets as
the default ensemble (its figure), a forecast, whose default is one model, as a
population of --seeds seeds (one program; the figure is their mean and standard
deviation on the test split). The baselines are those `results.json` reports for the same
test split. A run whose `results.json` exists in --out is read, not retrained.
Rewrites the table between its markers in `docs/real_data.md` (with the date,
machine and JAX version) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

from seqjax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "docs", "real_data.md")
START, END = "<!-- table: start -->", "<!-- table: end -->"

# (dataset, kind, the config's extra overrides: only what the file's format needs)
DATASETS = (
    ("BasicMotions", "classification", ()),
    ("OSULeaf", "classification", ()),
    ("UnitTest", "classification", ()),
    ("PLAID", "classification", ()),
    ("ArrowHead", "classification", ()),
    ("JapaneseVowels", "classification", ()),
    ("Covid3Month", "regression", ()),
    ("Tecator", "regression", ()),
    # 36 months: a 12-month horizon leaves no training windows after the validation and
    # test parts; a quarter does.
    ("ShampooSales", "forecast", ("--config.task.time_column=Time", "--config.task.horizon=3")),
    ("Airline", "forecast", ("--config.task.time_column=Date",)),
    # Its season grows with its level: the log option.
    ("Airline+log", "forecast", ("--config.task.time_column=Date", "--config.task.log=True")),
    ("Lynx", "forecast", ("--config.task.time_column=index", "--config.task.season=10")),
)


def files_of(data: str, name: str, kind: str) -> list[str]:
  name = name.split("+")[0]  # a dataset's second row, with other settings
  folder = os.path.join(data, name)
  if kind == "forecast":
    return [f"--config.task.train={os.path.join(folder, name + '.csv')}"]
  return [f"--config.task.train={os.path.join(folder, name + '_TRAIN.ts')}",
          f"--config.task.test={os.path.join(folder, name + '_TEST.ts')}"]


def run(data: str, out: str, name: str, kind: str, extra, seeds: int,
        overrides=()) -> dict | str:
  workdir = os.path.join(out, name)
  results = os.path.join(workdir, "results.json")
  if not os.path.exists(results):
    config = "configs/data.py" + ("" if kind == "classification" else f":{kind}")
    spread = [f"--config.population.seeds={seeds}"] if kind == "forecast" else []
    cmd = [sys.executable, "-m", "seqjax.main", f"--config={config}", f"--workdir={workdir}",
           *spread, *files_of(data, name, kind), *extra,
           *(f"--config.{o}" for o in overrides)]
    print(" ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
      return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
  with open(results) as f:
    out_ = json.load(f)
  with open(os.path.join(workdir, "timing.json")) as f:
    out_["wall_s"] = json.load(f)["wall_s"]
  return out_


def row(name: str, kind: str, r: dict | str, seeds: int) -> str:
  if isinstance(r, str):  # the one-line error, less the file's path
    said = r.split("': ", 1)[-1]
    return f"| {name} | {kind} | did not run: {said} | | | |"
  metric, population = r["metric"], r.get("population", {})
  mean = report.on_test(r)[metric]
  if population.get("select") == "ensemble":  # the default for classes and targets
    shown = f"{mean:.3f} (ensemble of {population.get('members', seeds)})"
  else:
    std = r.get("test_std", r.get("held_out_std", {})).get(metric, 0.0)
    shown = f"{mean:.3f} ± {std:.3f} ({seeds} seeds)"
  base = " / ".join(f"{b} {m[metric]:.3f}" for b, m in r["baselines"].items())
  v = r["verdict"]
  said = "beat" if v["beat"] else "tied" if v.get("tie") else "**lost**"
  missing = "".join(f"; {b} not computed: over the size budget"
                    for b in v.get("not_computed", ()))
  return (f"| {name} | {kind}, {metric} | {shown} | {base} | "
          f"{said} ({v['best_baseline']}{missing}) | {r['wall_s']:.0f} s |")


def write_table(path: str, block: str) -> None:
  """Puts `block` between the table markers of `path` (made, with them, if missing)."""
  text = (open(path).read() if os.path.exists(path) else
          "# Real data: the default model beside the field's baselines\n\n"
          f"Back to the [README](../README.md).\n\n{START}\n{END}\n")
  head, rest = text.split(START, 1)
  with open(path, "w") as f:
    f.write(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True, help="sktime/datasets/data of the sktime wheel")
  parser.add_argument("--out", default="runs/real_data")
  parser.add_argument("--seeds", type=int, default=3, help="a forecast's seeds")
  parser.add_argument("--only", default="", help="comma-separated dataset names")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a config override for every run (a candidate default), e.g. "
                      "--set=model.pool=mean; the table is then printed, not written")
  args = parser.parse_args()
  only = set(filter(None, args.only.split(",")))
  lines = ["| dataset | kind, metric | seqjax default, test split | baselines, same split | "
           "verdict (best baseline) | wall time |", "|---|---|---|---|---|---|"]
  for name, kind, extra in DATASETS:
    if only and name not in only:
      continue
    if not os.path.isdir(os.path.join(args.data, name.split("+")[0])):
      lines.append(f"| {name} | {kind} | not in --data | | | |")
      continue
    lines.append(row(name, kind, run(args.data, args.out, name, kind, extra, args.seeds,
                                     args.set), args.seeds))
    print(lines[-1], flush=True)
  import jax
  stamp = (f"Measured {datetime.date.today()} on {platform.machine()} "
           f"({os.cpu_count()} CPUs), JAX {jax.__version__}, by `python bench/real_data.py "
           f"--data=... --seeds={args.seeds}`.")
  table = "\n".join(lines)
  print(table)
  if not only and not args.set:
    write_table(TABLE, f"{stamp}\n\n{table}")
    print("wrote", TABLE)

if __name__ == "__main__":
  main()
