"""Runs the four default and four `:seed` configs; compares their results.json.

  python bench/same_numbers.py --out=/tmp/after                    # run, write results
  python bench/same_numbers.py --out=/tmp/after --against=/tmp/before

A restructuring of the trainer must leave every number unchanged: each
config's `results.json` (test metrics, rollout, steps, parameters) is
compared byte for byte with the one written before the change. Timing lives
in `timing.json` and is not compared.
"""

import argparse
import filecmp
import os
import subprocess
import sys

CONFIGS = ("freq", "mean", "echo", "sine", "freq:seed", "mean:seed", "echo:seed", "sine:seed")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for one workdir per config")
  parser.add_argument("--against", help="a folder written before the change, to compare with")
  parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  different = []
  for name in args.configs.split(","):
    workdir = os.path.join(args.out, name.replace(":", "-"))
    results = os.path.join(workdir, "results.json")
    if not os.path.exists(results):
      file, _, arg = name.partition(":")
      config = os.path.join(root, "configs", f"{file}.py") + (f":{arg}" if arg else "")
      subprocess.run([sys.executable, "-m", "seqjax.main", f"--config={config}",
                      f"--workdir={workdir}"], check=True, cwd=root)
    if args.against:
      before = os.path.join(args.against, name.replace(":", "-"), "results.json")
      same = filecmp.cmp(before, results, shallow=False)
      print(f"{name}: {'identical' if same else 'DIFFERENT'}", flush=True)
      if not same:
        different.append(name)
  if different:
    sys.exit(f"results.json differ for {', '.join(different)}")


if __name__ == "__main__":
  main()
