"""`train_and_evaluate(config, workdir)`: one run, from its config to its results.

The parts live in their own modules: `planning` (checks, task, mesh, model,
abstract state), `programs` (the jitted step, loop and evaluation),
`driver` (chunks of steps, cadence, stops), `outputs` (results, timing,
plots) and `workdirs` (the checks of a workdir).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax import checkpoint, driver, outputs, planning, sharding, workdirs, writers

Preempted = driver.Preempted


class Monitor:
  """The driver's reports for one model: a NaN stops the run; metrics averaged, as logged."""

  def __init__(self, evaluate, eval_set, writer: writers.MetricWriter,
               ckpt: checkpoint.Checkpointer):
    self._evaluate, self._eval_set = evaluate, eval_set
    self._writer, self._ckpt = writer, ckpt

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
    return preds, metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates on held-out data, writes everything to `workdir`.

  Rerunning with the same workdir resumes from the latest readable checkpoint.
  Returns the final held-out metrics (also in `workdir/results.json`).

  Raises:
    validate.ConfigError: a bad config value or workdir, before compiling.
    FloatingPointError: the loss or gradients became NaN/Inf (names the step).
    Preempted: SIGTERM; a checkpoint of the current step was saved first.
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
  writer = writers.MetricWriter(workdir, enabled=sharding.is_writer(),
                                resumed_at=started.first_step)
  try:
    state, (preds, held_out), compile_s = driver.run(
        started.train_loop, started.state, run.loop_args(), total=run.total,
        train_config=config.train,
        monitor=Monitor(started.evaluate, started.eval_set, writer, ckpt), ckpt=ckpt,
        writer=writer, workdir=workdir, zero_sums=started.zero_sums, t_start=t_start)
  finally:
    ckpt.close()
    writer.close()

  results = {"task": task.name, "metric": task.metric, "held_out": held_out, "steps": run.total,
             "parameters": n_params, "precision": config.model.precision,
             **task.extra_evaluation(run.model, state.params, run.eval_key, workdir,
                                     sharding.replicated(mesh))}
  timing = outputs.timing(t_start, compile_s, mesh)
  outputs.write(workdir, results, timing)
  outputs.plot(workdir, task, started.eval_set, np.asarray(preds))
  outputs.summary(results, timing)
  return results
