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

Each model of a grid computes what the same config trained alone computes
(`train.train_and_evaluate`), to float tolerance: same keys from its seed, same
data, and its gains applied as the scale of the unit-gain initializer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax import (
  checkpoint,
  compile_cache,
  configlib,
  files,
  plots,
  sharding,
  tasks,
  train,
  validate,
  writers,
)
from seqjax.tasks import base

ARRAY_FIELDS = ("seed", "model.kernel_gain", "model.recurrent_gain", "model.forget_bias",
                "train.learning_rate")


def load_sweep(config_file: str, name: str) -> list[dict[str, Any]]:
  """The runs `sweep(add, name)` of a config file declares."""
  module = configlib.load_module(config_file, "seqjax_sweep_config")
  if not hasattr(module, "sweep"):
    raise validate.ConfigError(f"--config={config_file!r} declares no sweep(add, name)")
  runs = []
  module.sweep(lambda **overrides: runs.append(overrides), name)
  if not runs:
    raise validate.ConfigError(f"--sweep={name!r} adds no runs in {config_file}")
  return runs


def override(config: ml_collections.ConfigDict,
             values: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields replaced; unknown fields are a ConfigError."""
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  for field, value in values.items():
    *groups, key = field.split(".")
    node = config
    for g in groups:
      node = node[g] if g in node else None
      if node is None:
        break
    if node is None or key not in node:
      raise validate.ConfigError(f"sweep field {field!r} is not a config field")
    node[key] = value
  return config


def group_runs(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
  """Splits runs by their structural (non-array) overrides, keeping order."""
  groups: dict[str, tuple[dict, list]] = {}
  for run in runs:
    structural = {k: v for k, v in run.items() if k not in ARRAY_FIELDS}
    key = json.dumps(structural, sort_keys=True)
    groups.setdefault(key, (structural, []))[1].append(run)
  return list(groups.values())


def _per_model(config, runs, field, cast=float):
  *groups, key = field.split(".")
  default = config
  for g in groups:
    default = default[g]
  return jnp.asarray([cast(r.get(field, default[key])) for r in runs])


class Grid:
  """M models of one config that differ in `ARRAY_FIELDS`, stacked on axis 0."""

  def __init__(self, config: ml_collections.ConfigDict, runs: list[dict[str, Any]]):
    structural = {k for r in runs for k in r if k not in ARRAY_FIELDS}
    if structural:
      raise validate.ConfigError(f"a grid varies only {ARRAY_FIELDS}; got {sorted(structural)}")
    if config.model.chrono_tmax and any("model.forget_bias" in r for r in runs):
      validate.fail("model.chrono_tmax", config.model.chrono_tmax,
                    "must be 0 to sweep model.forget_bias (chrono sets the gate biases)")
    train.validate_config(config)
    self.config, self.runs, self.size = config, runs, len(runs)
    for r in runs:
      for field in ("model.kernel_gain", "model.recurrent_gain", "train.learning_rate"):
        if field in r:
          validate.positive_float(field, r[field])
    self.task = tasks.make(config.task, config.train.batch_size)
    self.mesh = sharding.make_mesh(config.mesh)
    sharding.check_divides(self.mesh, sharding.MODEL, self.size, "the number of sweep runs")
    sharding.check_divides(self.mesh, sharding.DATA, config.train.batch_size, "train.batch_size")
    self.split = NamedSharding(self.mesh, P(sharding.MODEL))  # arrays [M, ...]
    self.repl = sharding.replicated(self.mesh)
    if config.train.epochs and not self.task.steps_per_epoch:
      validate.fail("train.epochs", config.train.epochs, "needs a finite dataset")
    self.total = (config.train.epochs * self.task.steps_per_epoch if config.train.epochs
                  else config.train.steps)
    # One model built with unit gains; each model's gains are applied as scales.
    unit = override(config, {"model.kernel_gain": 1.0, "model.recurrent_gain": 1.0})
    self.model = train.create_model(unit, self.task)
    # Per-model arrays are made by jitted functions placed on the mesh, so every
    # process of a multi-host job holds its part of the same global arrays.
    place = lambda f, *a: jax.jit(f, out_shardings=self.split)(*a)
    seeds = _per_model(config, runs, "seed", int)
    keys = place(jax.vmap(lambda s: jax.random.split(jax.random.key(s), 4)), seeds)
    self.data_keys, self.init_keys, self.dropout_keys, self.eval_keys = (
        place(lambda k, i=i: k[:, i], keys) for i in range(4))
    identity = lambda a: a
    self.kernel_gain = place(identity, _per_model(config, runs, "model.kernel_gain"))
    self.recurrent_gain = place(identity, _per_model(config, runs, "model.recurrent_gain"))
    self.forget_bias = place(identity, _per_model(config, runs, "model.forget_bias"))
    self.lr_scale = place(identity, _per_model(config, runs, "train.learning_rate")
                          / config.train.learning_rate)

  def init(self) -> train.TrainState:
    """Stacked train states [M, ...]."""
    config, hidden = self.config, self.config.model.hidden

    def one(data_key, init_key, kernel_gain, recurrent_gain, forget_bias):
      state = train.init_state(config, self.task, self.model, data_key, init_key, self.total)
      params = jax.tree_util.tree_map_with_path(
          lambda path, p: _scale_lstm(path, p, kernel_gain, recurrent_gain,
                                      forget_bias - config.model.forget_bias, hidden),
          state.params)
      return state.replace(params=params, opt_state=state.tx.init(params))

    args = (self.data_keys, self.init_keys, self.kernel_gain, self.recurrent_gain,
            self.forget_bias)
    init = jax.vmap(one)
    self.state_sharding = sharding.state_shardings(self.mesh, jax.eval_shape(init, *args),
                                                   grid=True)
    return jax.jit(init, out_shardings=self.state_sharding)(*args)

  def step_fn(self) -> Callable:
    """The jitted grid step; call after `init` (it needs the state's sharding)."""
    step = jax.vmap(train.make_train_step(self.model, self.task, self.mesh),
                    spmd_axis_name=sharding.MODEL)
    return jax.jit(step, in_shardings=(self.state_sharding, self.split, self.split, self.split),
                   out_shardings=(self.state_sharding, self.repl), donate_argnums=0)

  def eval_fn(self) -> Callable:
    """`(params [M, ...], eval_set [M, N, ...]) -> metrics {name: [M]}`."""
    model, task, bs = self.model, self.task, self.config.train.eval_batch_size

    def one(params, eval_set):
      n = jax.tree.leaves(eval_set)[0].shape[0]
      chunks = [jax.tree.map(lambda a: a[s:s + bs], eval_set) for s in range(0, n, bs)]
      preds = jnp.concatenate([train._apply(model, params, c)[1] for c in chunks])
      return task.loss_and_metrics(preds, eval_set)[1]

    return jax.jit(jax.vmap(one, spmd_axis_name=sharding.MODEL), out_shardings=self.repl)

  def eval_sets(self) -> base.Batch:
    sets = lambda data_keys, eval_keys: jax.vmap(self.task.eval_batch)(
        data_keys, jax.vmap(lambda k: jax.random.fold_in(k, base.EVAL_SALT))(eval_keys))
    return jax.jit(sets, out_shardings=self.split)(self.data_keys, self.eval_keys)

  def first_step(self, state: train.TrainState) -> int:
    """The step every model of `state` is at (readable on every process)."""
    return int(jax.jit(lambda s: s[0], out_shardings=self.repl)(state.step))


def _scale_lstm(path, p, kernel_gain, recurrent_gain, forget_shift, hidden):
  name = jax.tree_util.keystr(path)
  if "['lstm']" not in name:
    return p
  if name.endswith("['input_kernel']"):
    return p * kernel_gain
  if name.endswith("['recurrent_kernel']"):
    return p * recurrent_gain
  if name.endswith("['bias']"):
    return p.at[hidden:2 * hidden].add(forget_shift)
  return p


def train_grid(config: ml_collections.ConfigDict, runs: list[dict[str, Any]], workdir: str,
               converged: float | None = None) -> list[dict[str, Any]]:
  """Trains the runs as one vmapped program; returns one result per run.

  A model whose loss becomes NaN/Inf is reported as diverged; the others go
  on. `converged`: a held-out metric threshold (lower is better, or higher
  for accuracy) for `steps_to_converge`, the first eval step that meets it.
  """
  t0 = time.perf_counter()
  grid = Grid(config, runs)
  train.prepare_workdir(config, workdir)
  state = grid.init()
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  state = ckpt.restore_latest(state)
  first = grid.first_step(state)
  step_fn, eval_fn, eval_set = grid.step_fn(), grid.eval_fn(), grid.eval_sets()
  writer = writers.MetricWriter(workdir, enabled=sharding.is_writer())
  progress = writers.Progress(first, grid.total)
  metric, higher = grid.task.metric, grid.task.higher_is_better
  converge_step = np.full(grid.size, -1)
  history = []
  compile_s = None

  def evaluate(step):
    metrics = {k: np.asarray(v) for k, v in jax.device_get(eval_fn(state.params, eval_set)).items()}
    value = metrics[metric]
    if converged is not None:
      hit = (value >= converged) if higher else (value <= converged)
      newly = hit & (converge_step < 0)
      converge_step[newly] = step
    writer.write(step, "eval", {f"{metric}/median": float(np.nanmedian(value))})
    history.append({"step": step, metric: value.tolist()})
    return metrics

  try:
    for step in range(first + 1, grid.total + 1):
      state, metrics = step_fn(state, grid.data_keys, grid.dropout_keys, grid.lr_scale)
      if compile_s is None:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        progress.start(step)
      if train.itstime(step, config.train.log_every, grid.total):
        loss = np.asarray(metrics["loss"])
        scalars = {"loss/median": float(np.nanmedian(loss)),
                   "diverged": float(np.sum(~np.isfinite(loss)))}
        writer.write(step, "train", scalars)
        progress.report(step, scalars)
      if train.itstime(step, config.train.checkpoint_every, grid.total):
        ckpt.save(step, state)
      if train.itstime(step, config.train.eval_every, grid.total):
        final = evaluate(step)
    if not history or history[-1]["step"] != grid.total:  # resumed a finished grid
      final = evaluate(grid.total)
  finally:
    ckpt.close()
    writer.close()
  wall = time.perf_counter() - t0
  results = []
  for i, run in enumerate(runs):
    held_out = {k: float(v[i]) for k, v in final.items()}
    results.append({**run, "held_out": held_out,
                    "diverged": not all(np.isfinite(v) for v in held_out.values()),
                    "steps_to_converge": int(converge_step[i]) if converge_step[i] >= 0 else None})
  timing = {"models": grid.size, "steps": grid.total, "compile_s": compile_s, "wall_s": wall,
            "model_steps_per_s": grid.size * (grid.total - first) / max(wall - (compile_s or 0),
                                                                        1e-9),
            "platform": jax.default_backend(), "mesh": dict(grid.mesh.shape)}
  if sharding.is_writer():
    files.write_json(os.path.join(workdir, "results.json"),
                     {"metric": metric, "precision": config.model.precision, "runs": results,
                      "history": history})
    files.write_json(os.path.join(workdir, "timing.json"), timing)
  writers.console(f"grid of {grid.size}: {wall:.0f} s, "
                  f"{timing['model_steps_per_s']:.1f} model-steps/s (compile {compile_s:.1f} s)")
  return results


def throughput(config: ml_collections.ConfigDict, runs: list[dict[str, Any]],
               steps: int) -> dict[str, float]:
  """Model-steps/s of the vmapped grid against the same models trained one after another.

  Both sides are timed after compilation, over `steps` steps; "one after
  another" is the plain jitted step of a single model (what a run of
  `seqjax.main` executes), times the number of models.
  """
  grid = Grid(config, runs)
  state = grid.init()
  grid_rate = grid.size * _steps_per_s(grid.step_fn(), state, steps, grid.data_keys,
                                       grid.dropout_keys, grid.lr_scale)
  single_rate = _steps_per_s(jax.jit(train.make_train_step(grid.model, grid.task),
                                     donate_argnums=0),
                             jax.tree.map(lambda a: a[0], grid.init()), steps,
                             grid.data_keys[0], grid.dropout_keys[0])
  out = {"models": grid.size, "grid_model_steps_per_s": grid_rate,
         "sequential_model_steps_per_s": single_rate, "speedup": grid_rate / single_rate,
         "platform": jax.default_backend()}
  writers.console(json.dumps(out))
  return out


def _steps_per_s(step_fn: Callable, state, steps: int, *args) -> float:
  """Steps per second of `step_fn(state, *args)`, after one compiling step."""
  state, m = step_fn(state, *args)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step_fn(state, *args)
  jax.block_until_ready(m)
  return steps / (time.perf_counter() - t0)


def gain_table(results: list[dict[str, Any]], metric: str, group: str,
               field: str = "model.kernel_gain") -> list[str]:
  """Markdown rows: per gain, converged count, median and IQR of metric and steps."""
  rows = []
  for gain in sorted({r[field] for r in results}):
    rs = [r for r in results if r[field] == gain]
    values = np.array([r["held_out"][metric] for r in rs], float)
    steps = np.array([r["steps_to_converge"] for r in rs if r["steps_to_converge"] is not None])
    q1, med, q3 = (np.nanpercentile(values, [25, 50, 75]) if np.isfinite(values).any()
                   else [np.nan] * 3)
    step_txt = (f"{np.median(steps):.0f} ({np.percentile(steps, 25):.0f}-"
                f"{np.percentile(steps, 75):.0f})" if len(steps) else "never")
    rows.append(f"| {group} | {gain:g} | {len(steps)}/{len(rs)} | {med:.4f} ({q1:.4f}-{q3:.4f}) "
                f"| {step_txt} |")
  return rows


def run_sweep(config: ml_collections.ConfigDict, config_file: str, name: str, workdir: str,
              converged: float | None) -> str:
  """Runs every group of the sweep; writes `ablation.md` and `ablation.png`; returns the table."""
  runs = load_sweep(config_file, name)
  files.path(workdir).mkdir(parents=True, exist_ok=True)
  lines = ["| group | gain | converged | held-out metric median (IQR) | steps to converge "
           "median (IQR) |", "|---|---|---|---|---|"]
  curves = {}
  groups = group_runs(runs)
  varying = [k for k in groups[0][0] if len({json.dumps(g[0].get(k)) for g in groups}) > 1]
  for structural, members in groups:
    label = ",".join(f"{k}={structural[k]}" for k in varying) or "all"
    cfg = override(config, structural)
    arrays = [{k: v for k, v in r.items() if k in ARRAY_FIELDS} for r in members]
    writers.console(f"group {label}: {len(members)} models as one program")
    results = train_grid(cfg, arrays, os.path.join(workdir, label), converged)
    for r, member in zip(results, members, strict=True):
      r.update(member)
    metric = grid_metric(cfg)
    lines += gain_table(results, metric, label)
    gains = sorted({r["model.kernel_gain"] for r in results if "model.kernel_gain" in r})
    if gains:
      curves[label] = (gains, [float(np.nanmedian([r["held_out"][metric] for r in results
                                                   if r["model.kernel_gain"] == g]))
                               for g in gains])
  table = "\n".join(lines)
  files.write_text(os.path.join(workdir, "ablation.md"), table + "\n")
  if curves:
    plots.metric_vs_gain(curves, os.path.join(workdir, "ablation.png"), grid_metric(config))
  writers.console(table)
  return table


def grid_metric(config) -> str:
  return tasks.make(config.task, config.train.batch_size).metric


def main():
  from absl import app, flags, logging
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("sweep", "gain", "Name passed to the config file's sweep(add, name).")
  flags.DEFINE_string("workdir", None, "Output directory (default runs/sweep/<config>-<sweep>).")
  flags.DEFINE_float("converged", None, "Held-out metric threshold for steps-to-converge.")
  flags.DEFINE_integer("throughput", 0, "> 0: only time this many steps of each group's grid "
                       "against its models one after another, and print model-steps/s.")
  compile_cache.define_flag()
  flags.mark_flags_as_required(["config"])
  FLAGS = flags.FLAGS  # noqa: N806

  def run(argv):
    del argv
    path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]  # less the args
    name = os.path.splitext(os.path.basename(path))[0]
    workdir = FLAGS.workdir or os.path.join("runs", "sweep", f"{name}-{FLAGS.sweep}")
    compile_cache.enable(FLAGS.compilation_cache)
    sharding.initialize_distributed()
    try:
      if FLAGS.throughput:
        for structural, members in group_runs(load_sweep(path, FLAGS.sweep)):
          arrays = [{k: v for k, v in r.items() if k in ARRAY_FIELDS} for r in members]
          writers.console(f"group {structural}:")
          throughput(override(FLAGS.config, structural), arrays, FLAGS.throughput)
        return
      run_sweep(FLAGS.config, path, FLAGS.sweep, workdir, FLAGS.converged)
    except validate.ConfigError as e:
      raise SystemExit(f"error: {e}") from None

  logging.set_verbosity(logging.WARNING)  # progress goes to stdout; keep library chatter out
  app.run(run)


if __name__ == "__main__":
  main()
