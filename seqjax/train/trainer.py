"""`train_and_evaluate(config, workdir)`: one run, from its config to its results.

A run trains one model, or a population of M members as one vmapped program
(`config.population`, or a sweep grid's members): the same planner, driver
loop, monitor and outputs for both. The parts live in their own modules:
`planning` (checks, task, mesh, model, abstract state), `programs` (the jitted
step, loop and evaluation), `driver` (chunks of steps, cadence, stops),
`monitor` (checks, logged scalars, evaluations, each member's best and early
stopping), `population` (a population's results and selection) and `workdirs`
(the checks of a workdir). What a finished run leaves (`results.json`,
`timing.json`, plots, the console's last lines) is written here: `results.json`
holds only what the run computed (bit-identical across reruns); times go to
`timing.json`. Only the writer process writes.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax.config import cli
from seqjax.data import baselines
from seqjax.data.tasks import base
from seqjax.runtime import files, sharding, writers
from seqjax.train import checkpoint, driver, monitor, planning, population, workdirs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       members: list[dict[str, Any]] | None = None) -> dict[str, Any]:
  """Trains, evaluates on held-out data, writes everything to `workdir`.

  `members`: None for the config's own population (`config.population`: one
  model unless it asks for more), else the overrides of each member
  (`planning.ARRAY_FIELDS` only). Rerunning with the same workdir resumes from
  the latest readable checkpoint. Returns the results (also in
  `workdir/results.json`).

  Raises:
    validate.ConfigError: a bad config value or workdir, before compiling.
    FloatingPointError: the loss or gradients became NaN/Inf (names the step).
    cli.Preempted: SIGTERM; a checkpoint of the current step was saved first.
  """
  t_start = time.perf_counter()
  if members is None:
    members = planning.population_members(config)
  run = planning.plan(config, workdir, members)  # every check, before compiling; holds workdir
  try:
    return _train_and_evaluate(run, workdir, t_start)
  except Exception as e:
    if not cli.disk_full(e):
      raise
    safe = checkpoint.finished_steps(os.path.join(workdir, "checkpoints"))
    raise cli.DiskFull(
        f"the disk of --workdir={workdir!r} is full; "
        + (f"the checkpoint at step {safe[-1]} is safe" if safe else "no checkpoint was saved")
        + ": free space, then rerun the same command to resume") from None
  finally:
    workdirs.release(workdir)


def _train_and_evaluate(run: planning.Run, workdir: str, t_start: float) -> dict[str, Any]:
  config = run.config
  if checkpoint.finished_steps(os.path.join(workdir, "checkpoints")):
    run.task.check_resume(workdir)
  with _no_garbage_collection():  # while other threads compile and import
    plots = _import_plots_in_background()
    started = driver.start(run, workdir, config.train.eval_batch_size)
    plots.join()
  run, ckpt = started.run, started.ckpt
  task, mesh = run.task, run.mesh
  n_params = sum(p.size for p in jax.tree.leaves(run.state.params)) // run.size
  as_one = f", {run.size} members as one program" if run.grid else ""
  sample = planning.train_sample(task)["x"]
  writers.console(run.model.summary(sample.shape[1], sample.shape[2], task.outputs, n_params))
  writers.console(f"task {task.name}: {run.total} steps{as_one}, "
                  f"workdir {workdir}, mesh {dict(mesh.shape)}")
  held = started.held_out
  if held.separate_test:
    unit = "windows" if task.causal else "sequences"
    test_set = f"the test split, {held.test.size} {unit}"
    val_set = (f"{task.folds} folds of the {held.validation.size} labelled {unit}, one "
               "for each member, which trains on the others" if task.folds
               else f"{held.validation.size} {unit}")
    writers.console(f"validation: {val_set} (early stopping and the best step); test: "
                    f"{held.test.size} {unit} (results.json)")
  else:
    test_set = "the task's own examples, never trained on; also the validation set"
    writers.console("validation and test: one set of the task's own examples, never trained "
                    "on (early stopping, the best step and results.json)")
  if sharding.is_writer():
    task.save(workdir)
  writer = writers.MetricWriter(workdir, enabled=sharding.is_writer(),
                                resumed_at=started.first_step)
  store = checkpoint.ParamsStore(os.path.join(workdir, checkpoint.PARAMS_DIR))
  keep_best = config.train.keep_best
  mon = monitor.Monitor(run, held.evaluate, held.validation, writer, ckpt,
                        state=started.state, best=store if keep_best else None,
                        history=[r for r in writers.read_metrics(workdir)
                                 if r["step"] <= started.first_step])
  try:
    state, (preds, figures), compile_s = driver.loop(
        started.train_loop, started.state, run.loop_args(), total=run.total,
        train_config=config.train, monitor=mon, ckpt=ckpt, writer=writer, workdir=workdir,
        zero_sums=started.zero_sums, t_start=t_start, feed=started.feed)
    steps = driver.first_step(state)
    if not keep_best:
      ckpt.wait()  # one orbax manager committing at a time (see ParamsStore)
      store.save(steps, state.params)
    if run.grid:  # each member's best parameters
      params, last_evaluated = (mon.best_params, False) if keep_best else (state.params, True)
    else:
      params_step, params = (store.restore(state.params) if keep_best
                             else (steps, state.params))
      last_evaluated = params_step == steps
    if not last_evaluated:  # the validation figures of the parameters kept
      preds, figures = held.evaluate(params, held.validation)
  finally:
    store.close()
    ckpt.close()
    writer.close()
    started.feed.close()

  if not run.grid:
    figures = {k: float(v) for k, v in figures.items()}
  validation = figures  # what chose each member's step
  if held.separate_test:  # held out twice: validation chose the step, the test set judges it
    preds, figures = held.evaluate(params, held.test)
  if run.grid:
    results, eval_set, preds = population.results(
        run, mon, state, params, preds=preds, test=figures, validation=validation,
        held=held, workdir=workdir)
    results = {"task": task.name, "metric": task.metric, **results, "steps": steps,
               "parameters": n_params, "precision": config.model.precision}
  else:
    eval_set = held.arrays(held.test)
    results = {"task": task.name, "metric": task.metric, "test": figures, "steps": steps,
               "parameters": n_params, "precision": config.model.precision,
               "params_step": params_step}
    if held.separate_test:
      results["validation"] = validation
  results["test_set"] = test_set
  baseline_preds = task.baselines()
  skipped = {name: p.reason for name, p in baseline_preds.items()
             if isinstance(p, baselines.Skipped)}
  if len(baseline_preds) > len(skipped):
    results["baselines"] = {name: _metrics(held.evaluate, p, held.test, run.grid)
                            for name, p in baseline_preds.items() if name not in skipped}
    if skipped:
      results["baselines_not_computed"] = skipped
    results["verdict"] = baselines.verdict(task.metric, task.higher_is_better,
                                           (results["test"] or {}).get(task.metric),
                                           results["baselines"], tuple(skipped))
  if not run.grid:
    results.update(task.extra_evaluation(run.model, params, run.eval_key, workdir,
                                         sharding.replicated(mesh)))
  extra = {"models": run.size, "steps": run.total} if run.grid else {}
  timing = _timing(t_start, compile_s, mesh, **extra)
  if run.grid:
    timing["model_steps_per_s"] = run.size * (run.total - started.first_step) / max(
        timing["wall_s"] - (compile_s or 0), 1e-9)
  _write(workdir, results, timing)
  _plot(workdir, task, eval_set, np.asarray(preds))
  _summary(results, timing)
  return results


def _metrics(evaluator, preds, examples, population: bool) -> dict[str, float]:
  """One model's metrics of `preds` [N, ...] (a population's evaluator takes [M, N, ...])."""
  if not population:
    return evaluator.metrics(preds, examples)
  return {k: float(v[0]) for k, v in evaluator.metrics(preds[None], examples).items()}


def _import_plots_in_background() -> threading.Thread:
  """Imports matplotlib (slow to import) in a thread, while XLA compiles without the GIL.

  Not a daemon: an exit waits for it rather than cut it.
  """
  thread = threading.Thread(target=importlib.import_module, args=("seqjax.runtime.plots",),
                            name="import-plots")
  thread.start()
  return thread


@contextlib.contextmanager
def _no_garbage_collection():
  """No automatic garbage collection inside: JAX runs XLA's collection from a `gc` callback,
  and a collection started by one thread (an import) while another compiled could hang
  the process at start-up (seen in about 1 run in 50 of `freq:quick` on 2 cores)."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _timing(t_start: float, compile_s: float | None, mesh: jax.sharding.Mesh,
           **extra) -> dict[str, Any]:
  """Wall time since `t_start`, the first step's time, and where the run ran."""
  return {**extra, "compile_s": compile_s, "wall_s": time.perf_counter() - t_start,
          "platform": jax.default_backend(), "devices": mesh.size, "mesh": dict(mesh.shape),
          "processes": jax.process_count()}


def _write(workdir: str, results: dict[str, Any], timing_: dict[str, Any]) -> None:
  """`results.json` and `timing.json` (writer process only)."""
  if sharding.is_writer():
    for name, content in (("results.json", results), ("timing.json", timing_)):
      files.write_json(os.path.join(workdir, name), content)


def _plot(workdir: str, task: base.Task, eval_set: base.Batch, preds: np.ndarray) -> None:
  """`loss.png` from the metrics so far, and the task's own picture of its predictions."""
  if not sharding.is_writer():
    return
  from seqjax.runtime import plots
  plots.loss_curves(writers.read_metrics(workdir), os.path.join(workdir, "loss.png"),
                    task.metric)
  task.plot(eval_set, preds, workdir)


def _summary(results: dict[str, Any], timing_: dict[str, Any]) -> None:
  """The run's last lines on the console."""
  shown = {k: v for k, v in results.items() if k not in ("members", "history")}  # one line
  writers.console("results: " + json.dumps(shown))
  writers.console(f"time: {timing_['wall_s']:.1f} s (first step, compile included: "
                  f"{timing_['compile_s'] or 0:.1f} s)")
  if results.get("verdict"):  # last: whether the model beat the naive answers
    line = baselines.verdict_line(results["verdict"], results["metric"])
    writers.console(line if results["verdict"]["beat"] else "warning: " + line)
