"""`train_and_evaluate(config, workdir)`: one run, from its config to its results.

The parts live in their own modules: `planning` (checks, task, mesh, model,
abstract state), `programs` (the jitted step, loop and evaluation),
`driver` (chunks of steps, cadence, stops), `outputs` (results, timing,
plots) and `workdirs` (the checks of a workdir).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax.runtime import sharding, writers
from seqjax.train import checkpoint, driver, outputs, planning, workdirs


class Monitor:
  """The driver's reports for one model: a NaN stops the run; metrics averaged, as logged.

  It also keeps the best held-out evaluation: with `train.keep_best` its
  parameters go to `best` (a `checkpoint.ParamsStore`) as they improve, and
  with `train.early_stopping = P` training stops after P evaluations without
  improvement (Keras `EarlyStopping(patience=P, restore_best_weights=True)`).
  A resumed run reads the evaluations before its checkpoint back from
  `metrics.jsonl`.
  """

  def __init__(self, evaluate, eval_set, writer: writers.MetricWriter,
               ckpt: checkpoint.Checkpointer, *, metric: str, higher_is_better: bool,
               patience: int = 0, best: checkpoint.ParamsStore | None = None,
               history: list[dict] = ()):
    self._evaluate, self._eval_set = evaluate, eval_set
    self._writer, self._ckpt = writer, ckpt
    self._metric, self._higher = metric, higher_is_better
    self._patience, self._best = patience, best
    self.best_step, self.best_metrics, self._since_best = None, None, 0
    for record in history:
      if record["split"] == "eval" and metric in record:
        self._track(record["step"], {k: v for k, v in record.items()
                                     if k not in ("step", "split", "time")})

  def _track(self, step: int, metrics: dict[str, float]) -> bool:
    value = metrics[self._metric]
    best = None if self.best_metrics is None else self.best_metrics[self._metric]
    improved = best is None or (value > best if self._higher else value < best)
    if improved:
      self.best_step, self.best_metrics, self._since_best = step, metrics, 0
    else:
      self._since_best += 1
    return improved

  def check(self, step: int, totals: dict[str, Any]) -> bool:
    if not totals["finite"]:
      raise FloatingPointError(
          f"loss or gradients became NaN/Inf at step {step} (steps before it were finite; "
          f"last checkpoint: step {self._ckpt.latest_step() or 'none'}); "
          "lower train.learning_rate or set train.grad_clip")
    return True

  def train_scalars(self, sums: dict[str, Any], steps: int) -> dict[str, float]:
    return {k: float(v) / steps for k, v in sums.items()}

  def evaluate(self, step: int, state) -> tuple[Any, dict[str, float]]:
    """(held-out predictions, metrics) at `step`."""
    preds, metrics = self._evaluate(state.params, self._eval_set)
    metrics = {k: float(v) for k, v in metrics.items()}
    self._writer.write(step, "eval", metrics)
    writers.console(f"held-out at step {step}: "
                    + " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
    if self._track(step, metrics) and self._best is not None:
      self._ckpt.wait()  # one orbax manager committing at a time (see ParamsStore)
      self._best.save(step, state.params)
    return preds, metrics

  def stop_early(self) -> bool:
    return bool(self._patience) and self._since_best >= self._patience


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates on held-out data, writes everything to `workdir`.

  Rerunning with the same workdir resumes from the latest readable checkpoint.
  Returns the final held-out metrics (also in `workdir/results.json`).

  Raises:
    validate.ConfigError: a bad config value or workdir, before compiling.
    FloatingPointError: the loss or gradients became NaN/Inf (names the step).
    cli.Preempted: SIGTERM; a checkpoint of the current step was saved first.
  """
  t_start = time.perf_counter()
  run = planning.plan(config, workdir)  # every check, before anything compiles; holds workdir
  try:
    return _train_and_evaluate(run, workdir, t_start)
  finally:
    workdirs.release(workdir)


def _train_and_evaluate(run: planning.Run, workdir: str, t_start: float) -> dict[str, Any]:
  config = run.config
  outputs.import_plots_in_background()
  started = driver.start(run, workdir, config.train.eval_batch_size)
  run, ckpt = started.run, started.ckpt
  task, mesh = run.task, run.mesh
  n_params = sum(p.size for p in jax.tree.leaves(run.state.params))
  writers.console(f"task {task.name}: {n_params} parameters, {run.total} steps, "
                  f"workdir {workdir}, mesh {dict(mesh.shape)}")
  if sharding.is_writer():
    task.save(workdir)
  writer = writers.MetricWriter(workdir, enabled=sharding.is_writer(),
                                resumed_at=started.first_step)
  store = checkpoint.ParamsStore(os.path.join(workdir, checkpoint.PARAMS_DIR))
  keep_best = config.train.keep_best
  metric, higher_is_better = task.selection
  monitor = Monitor(started.evaluate, started.eval_set, writer, ckpt, metric=metric,
                    higher_is_better=higher_is_better,
                    patience=config.train.early_stopping, best=store if keep_best else None,
                    history=[r for r in writers.read_metrics(workdir)
                             if r["step"] <= started.first_step])
  try:
    state, (preds, held_out), compile_s = driver.loop(
        started.train_loop, started.state, run.loop_args(), total=run.total,
        train_config=config.train, monitor=monitor, ckpt=ckpt, writer=writer, workdir=workdir,
        zero_sums=started.zero_sums, t_start=t_start, feed=started.feed)
    steps = driver.first_step(state)
    if not keep_best:
      ckpt.wait()  # one orbax manager committing at a time (see ParamsStore)
      store.save(steps, state.params)
    params_step, params = store.restore(state.params) if keep_best else (steps, state.params)
    if params_step != steps and not task.fed:  # the best step's held-out predictions
      preds, held_out = started.evaluate(params, started.eval_set)
      held_out = {k: float(v) for k, v in held_out.items()}
  finally:
    store.close()
    ckpt.close()
    writer.close()
    if started.feed is not None:
      started.feed.close()

  results = {"task": task.name, "metric": task.metric, "held_out": held_out, "steps": steps,
             "parameters": n_params, "precision": config.model.precision,
             "params_step": params_step}
  eval_set = started.eval_set
  if task.fed:  # held out twice: validation chose the step, the test set judges it
    results["validation"] = monitor.best_metrics if keep_best else held_out
    preds, results["held_out"] = started.evaluate(params, task.test)
    results["baselines"] = {name: started.evaluate.metrics(p, task.test)
                            for name, p in task.baselines.items()}
    eval_set = task.test.all()
  results.update(task.extra_evaluation(run.model, params, run.eval_key, workdir,
                                       sharding.replicated(mesh)))
  timing = outputs.timing(t_start, compile_s, mesh)
  outputs.write(workdir, results, timing)
  outputs.plot(workdir, task, eval_set, np.asarray(preds))
  outputs.summary(results, timing)
  return results
