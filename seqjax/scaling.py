"""Weak scaling of the data-parallel train step: per-device batch fixed, 1..N devices.

  python -m seqjax.scaling --config=configs/freq.py --per_device_batch=32 --devices=1,2,4,8

Each device count runs in its own process (`--measure=N`), with the config's
mesh set to `data=N` and the global batch N x per-device batch. On a CPU the
devices are simulated (`XLA_FLAGS=--xla_force_host_platform_device_count=N`)
and share the host's cores, so the figures show what sharding costs, not a
speedup. On a GPU/TPU host the first N real devices are used.
Efficiency = (time per step on 1 device) / (time per step on N devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax

from seqjax.config import cli, configlib
from seqjax.runtime import files, rates, writers
from seqjax.train import planning, programs


def measure(config, devices: int, per_device_batch: int, steps: int) -> dict[str, float]:
  """Steps/s of the jitted train step on a `data=devices` mesh (this process's devices)."""
  config = configlib.override(config, {"mesh.data": devices, "mesh.model": 1,
                                   "train.batch_size": devices * per_device_batch})
  run = planning.setup(config)
  step = programs.jit_train_step(run)
  t0 = time.perf_counter()
  state, metrics = step(run.state, run.data_key, run.dropout_key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  rate = rates.call_steps_per_second(step, state, steps, run.data_key, run.dropout_key)
  return {"devices": devices, "global_batch": devices * per_device_batch, "steps_per_s": rate,
          "examples_per_s": rate * devices * per_device_batch, "compile_s": compile_s,
          "platform": jax.default_backend()}


def table(rows: list[dict[str, float]]) -> str:
  lines = ["| devices | global batch | ms/step | examples/s | efficiency |",
           "|---|---|---|---|---|"]
  base = rows[0]["steps_per_s"]
  for r in rows:
    lines.append(f"| {r['devices']} | {r['global_batch']} | {1e3 / r['steps_per_s']:.2f} | "
                 f"{r['examples_per_s']:.0f} | {r['steps_per_s'] / base:.2f} |")
  return "\n".join(lines)


def main():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_integer("per_device_batch", 32, "Batch per device (weak scaling keeps it fixed).",
                       lower_bound=1)
  flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to measure.")
  flags.DEFINE_integer("steps", 20, "Timed steps per device count (after the compiling one).",
                       lower_bound=1)
  flags.DEFINE_integer("measure", 0, "Internal: measure this device count in this process.",
                       lower_bound=0)
  flags.DEFINE_string("out", None, "Also write the rows as JSON here.")
  flags.mark_flags_as_required(["config"])
  FLAGS = flags.FLAGS  # noqa: N806

  def run(argv):
    del argv  # no positional arguments (cli.run refuses them)
    _run(cli.positive_ints("devices", FLAGS.devices, "1,2,4,8"))

  def _run(devices):
    if FLAGS.measure:
      row = measure(FLAGS.config, FLAGS.measure, FLAGS.per_device_batch, FLAGS.steps)
      print(json.dumps(row), flush=True)
      return
    simulate = jax.default_backend() == "cpu"
    rows = []
    for n in devices:
      env = dict(os.environ)
      if simulate:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
      proc = subprocess.run([sys.executable, "-m", "seqjax.scaling", *sys.argv[1:],
                             f"--measure={n}"],
                            env=env, capture_output=True, text=True)
      if proc.returncode:  # its own one-line error, and its exit code
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        error = next((line for line in lines if line.startswith("error: ")), lines[-1])
        print(f"error: the {n}-device measurement failed: {error.removeprefix('error: ')}",
              file=sys.stderr)
        sys.exit(proc.returncode)
      rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
      writers.console(json.dumps(rows[-1]))
    kind = "simulated CPU devices sharing the host's cores" if simulate else "devices"
    writers.console(f"weak scaling, {FLAGS.per_device_batch} examples per device, {kind}:")
    writers.console(table(rows))
    if FLAGS.out:
      files.write_json(FLAGS.out, rows)

  cli.run(run, children=True)


if __name__ == "__main__":
  main()
