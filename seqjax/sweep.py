"""Grids of runs as ONE vmapped, jitted program.

  python -m seqjax.sweep --config=configs/mean.py:seed --sweep=gain --workdir=runs/gain

A config file declares its sweeps as `sweep(add, name)`: each `add(**overrides)`
is one run, overrides keyed by dotted config fields. Runs that differ only in
array-valued hyperparameters (`ARRAY_FIELDS`: seed, init gains, forget bias,
learning rate) train together as one program vmapped over a leading `model`
axis M: one compilation, one step for all of them. Runs that differ in
structural settings (sizes, lengths) form separate groups, one program each.

On a mesh (`config.mesh`), the grid's models are split along the `model`
axis and each model's batch along `data` (e.g. 16 models on a 4x2 mesh: four
models per data-parallel pair of devices).

Each group is a population of the one trainer (`trainer.train_and_evaluate`):
each member computes what the same config trained alone computes, to float
tolerance (same keys from its seed, same data, and its gains applied as the
scale of the unit-gain initializer), with the same device-side loops,
checkpoints, SIGTERM, resume after a kill and progress.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax.config import cli, configlib, validate
from seqjax.data import tasks
from seqjax.runtime import files, rates, sharding, writers
from seqjax.train import planning, programs, trainer, workdirs

ARRAY_FIELDS = planning.ARRAY_FIELDS


def load_sweep(config_file: str, name: str) -> list[dict[str, Any]]:
  """The runs `sweep(add, name)` of a config file declares."""
  module = configlib.load_module(config_file, "seqjax_sweep_config")
  if not hasattr(module, "sweep"):
    raise validate.ConfigError(f"--config={config_file!r} declares no sweep(add, name)")
  runs = []
  try:
    module.sweep(lambda **overrides: runs.append(overrides), name)
  except (ValueError, KeyError, TypeError) as e:  # the config's own refusal of a name
    raise validate.ConfigError(f"--sweep={name!r}: {e}") from None
  if not runs:
    raise validate.ConfigError(f"--sweep={name!r} adds no runs in {config_file}")
  return runs


def group_runs(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
  """Splits runs by their structural (non-array) overrides, keeping order."""
  groups: dict[str, tuple[dict, list]] = {}
  for run in runs:
    structural = {k: v for k, v in run.items() if k not in ARRAY_FIELDS}
    key = json.dumps(structural, sort_keys=True)
    groups.setdefault(key, (structural, []))[1].append(run)
  return list(groups.values())


def steps_to_converge(history: dict[int, list[float]], threshold: float,
                      higher_is_better: bool) -> list[int | None]:
  """Per model, the first evaluated step whose metric meets `threshold`, or None."""
  out = None
  for step in sorted(history):
    value = np.asarray(history[step], float)
    hit = (value >= threshold) if higher_is_better else (value <= threshold)
    if out is None:
      out = [None] * len(value)
    for i in np.flatnonzero(hit):
      if out[i] is None:
        out[i] = step
  return out or []


def _no_population(config: ml_collections.ConfigDict) -> None:
  if planning.population_members(config) is not None:
    raise validate.ConfigError("a sweep's groups are populations of their own: leave "
                               "population.seeds at 1 and population.learning_rates empty")


def train_grid(config: ml_collections.ConfigDict, members: list[dict[str, Any]], workdir: str,
               converged: float | None = None) -> list[dict[str, Any]]:
  """Trains the members (override dicts) as one population (`trainer.train_and_evaluate`);
  returns one result each: its overrides, `test` (NaN where it diverged), `diverged`,
  `diverged_at` and `steps_to_converge`, the first evaluated step whose validation metric
  meets `converged` (lower is better, or higher for accuracy), or None.
  """
  _no_population(config)
  results = trainer.train_and_evaluate(config, workdir, members)
  metric, converge = results["metric"], [None] * len(members)
  if converged is not None:
    history = {h["step"]: [np.nan if v is None else v for v in h[metric]]
               for h in results["history"]}
    converge = steps_to_converge(history, converged,
                                 tasks.make(config.task, 1).higher_is_better)
  nan = dict.fromkeys(results["members"][0]["test"] or {metric: None}, np.nan)
  return [{**overrides, "test": member["test"] or nan,
           "diverged": member["diverged_at"] is not None, "diverged_at": member["diverged_at"],
           "steps_to_converge": converge[i]}
          for i, (overrides, member) in enumerate(zip(members, results["members"], strict=True))]


def throughput(config: ml_collections.ConfigDict, members: list[dict[str, Any]],
               steps: int) -> dict[str, float]:
  """Model-steps/s of the grid against the same models trained one after another.

  Both sides run `steps` steps in one call of their device-side train loop,
  timed after compilation: the grid's program for all models, and the
  program a run of `seqjax.main` executes for one of them (times the number
  of models).
  """
  grid = planning.initialize(planning.plan(config, members=members))
  grid_rate = grid.size * rates.loop_steps_per_second(
      programs.jit_train_loop(grid), grid.state, steps, *grid.loop_args(),
      sums=programs.zero_sums(grid))
  # One model alone on the same devices, its batch split as far as it divides.
  devices, batch = jax.device_count(), config.train.batch_size
  data = max(d for d in range(1, devices + 1) if devices % d == 0 and batch % d == 0)
  alone = planning.setup(configlib.override(config, {**members[0], "mesh.model": 1,
                                                     "mesh.data": data}))
  single_rate = rates.loop_steps_per_second(programs.jit_train_loop(alone), alone.state,
                                             steps, *alone.loop_args(),
                                             sums=programs.zero_sums(alone))
  out = {"models": grid.size, "grid_model_steps_per_s": grid_rate,
         "sequential_model_steps_per_s": single_rate, "speedup": grid_rate / single_rate,
         "platform": jax.default_backend()}
  writers.console(json.dumps(out))
  return out


def gain_table(results: list[dict[str, Any]], metric: str, group: str, default: float,
               field: str = "model.kernel_gain") -> list[str]:
  """Markdown rows: per gain (`default` for members that do not set it), converged count,
  median and IQR of metric and steps."""
  rows = []
  gain_of = lambda r: r.get(field, default)  # noqa: E731
  for gain in sorted({gain_of(r) for r in results}):
    rs = [r for r in results if gain_of(r) == gain]
    values = np.array([r["test"][metric] for r in rs], float)
    steps = np.array([r["steps_to_converge"] for r in rs if r["steps_to_converge"] is not None])
    q1, med, q3 = (np.nanpercentile(values, [25, 50, 75]) if np.isfinite(values).any()
                   else [np.nan] * 3)
    step_txt = (f"{np.median(steps):.0f} ({np.percentile(steps, 25):.0f}-"
                f"{np.percentile(steps, 75):.0f})" if len(steps) else "never")
    rows.append(f"| {group} | {gain:g} | {len(steps)}/{len(rs)} | {med:.4f} ({q1:.4f}-{q3:.4f}) "
                f"| {step_txt} |")
  return rows


def array_members(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """A group's members with only their `ARRAY_FIELDS` (the group holds the rest)."""
  return [{k: v for k, v in m.items() if k in ARRAY_FIELDS} for m in members]


def group_labels(config: ml_collections.ConfigDict, structurals: list[dict[str, Any]],
                 short: bool = False) -> list[str]:
  """A name per group (its folder): the structural fields whose values differ between
  groups, each at its group's value or the config's; "all" for a single group. `short`:
  each field by its last name, for a legend (`length=100 steps=2000`)."""
  def value(structural, field):
    return structural[field] if field in structural else configlib.get(config, field)

  fields = list(dict.fromkeys(k for structural in structurals for k in structural))
  varying = [k for k in fields
             if len({json.dumps(value(s, k)) for s in structurals}) > 1]
  if short:
    return [" ".join(f"{k.rsplit('.', 1)[-1]}={value(s, k)}" for k in varying) or "all"
            for s in structurals]
  return [",".join(f"{k}={value(s, k)}" for k in varying) or "all" for s in structurals]


def run_sweep(config: ml_collections.ConfigDict, config_file: str, name: str, workdir: str,
              converged: float | None) -> str:
  """Runs every group of the sweep; writes `ablation.md` and `ablation.png`; returns the table."""
  runs = load_sweep(config_file, name)
  _no_population(config)
  files.path(workdir).mkdir(parents=True, exist_ok=True)
  lines = ["| group | gain | converged | test metric median (IQR) | steps to converge "
           "median (IQR) |", "|---|---|---|---|---|"]
  curves = {}
  groups = group_runs(runs)
  labels = group_labels(config, [structural for structural, _ in groups])
  legend = dict(zip(labels, group_labels(config, [structural for structural, _ in groups],
                                         short=True), strict=True))
  for structural, members in groups:  # every group's checks before the first one trains
    planning.plan(configlib.override(config, structural), members=array_members(members))
  for label, (structural, members) in zip(labels, groups, strict=True):
    cfg = configlib.override(config, structural)
    arrays = array_members(members)
    writers.console(f"group {label}: {len(members)} models as one program")
    results = train_grid(cfg, arrays, os.path.join(workdir, label), converged)
    for r, member in zip(results, members, strict=True):
      r.update(member)
    metric = grid_metric(cfg)
    lines += gain_table(results, metric, label, cfg.model.kernel_gain)
    gains = sorted({r["model.kernel_gain"] for r in results if "model.kernel_gain" in r})
    if gains:
      curves[legend[label]] = (gains, [float(np.nanmedian([r["test"][metric] for r in results
                                                   if r["model.kernel_gain"] == g]))
                               for g in gains])
  table = "\n".join(lines)
  files.write_text(os.path.join(workdir, "ablation.md"), table + "\n")
  if curves:
    from seqjax.runtime import plots  # matplotlib: imported when first drawing
    plots.metric_vs_gain(curves, os.path.join(workdir, "ablation.png"), grid_metric(config))
  writers.console(table)
  return table


def grid_metric(config) -> str:
  return tasks.make(config.task, config.train.batch_size).metric


def main():
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("sweep", "gain", "Name passed to the config file's sweep(add, name).")
  flags.DEFINE_string("workdir", None, "Output directory (default runs/sweep/<config>-<sweep>).")
  flags.DEFINE_float("converged", None, "Validation metric threshold for steps-to-converge.")
  flags.DEFINE_integer("throughput", 0, "> 0: only time this many steps of each group's grid "
                       "against its models one after another, and print model-steps/s.",
                       lower_bound=0)
  cli.define_compile_cache_flag()
  flags.mark_flags_as_required(["config"])
  FLAGS = flags.FLAGS  # noqa: N806

  def run(argv):
    del argv  # no positional arguments (cli.run refuses them)
    if FLAGS.converged is not None and not math.isfinite(FLAGS.converged):
      raise app.UsageError(f"--converged={FLAGS.converged} must be a finite number")
    path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]  # less the args
    workdir = FLAGS.workdir or workdirs.default(path, FLAGS.sweep)
    cli.enable_compile_cache(FLAGS.compilation_cache)
    # A CPU host as N devices only when asked (mesh.cpu_devices=N): a grid splits its
    # models along mesh.model, which the automatic choice (by batch) does not see.
    if not sharding.initialize_distributed() and FLAGS.config.mesh.cpu_devices > 0:
      config = FLAGS.config
      sharding.set_cpu_devices(config.mesh.cpu_devices, config.train.batch_size,
                               config.model.hidden)
    if FLAGS.throughput:
      for structural, members in group_runs(load_sweep(path, FLAGS.sweep)):
        writers.console(f"group {structural}:")
        throughput(configlib.override(FLAGS.config, structural), array_members(members),
                   FLAGS.throughput)
      return
    run_sweep(FLAGS.config, path, FLAGS.sweep, workdir, FLAGS.converged)

  cli.run(run)


if __name__ == "__main__":
  main()
