"""A population's results: each member's figures, and the one answer `population.select` picks.

`config.population.select`:
  "all"       every member's figures, with their mean and standard deviation
              (seeds as error bars); pictures show the best member;
  "best"      the member with the best validation metric (the evaluations that
              early stopping and `train.keep_best` use), never the test set's (a
              generated task has one set, generated from each member's
              seed, for both);
  "ensemble"  the members' predictions averaged (class probabilities for a
              classifier), evaluated as one model.
A member whose training became NaN/Inf is reported with its step and left out.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.runtime import sharding


def results(run, mon, state, params, *, preds, test: dict[str, Any],
            validation: dict[str, Any], held, workdir: str
            ) -> tuple[dict[str, Any], Any, np.ndarray]:
  """(the population's entries of results.json, the test set and predictions to draw).

  Args:
    run: the `planning.Run` (a population).
    mon: its `monitor.Monitor`, after training.
    state: the final train state; params: the parameters the members predict
      with (each member's best with `train.keep_best`, else the final ones).
    preds, test: those parameters' predictions [M, N, ...] and metrics {name: [M]}
      on the test set.
    validation: their metrics {name: [M]} on the validation set, which chose each
      member's step (`test` itself when the two sets are one).
    held: the run's `driver.HeldOut` (its sets and their evaluation).
    workdir: where pictures of the best member go.
  """
  task, select = run.task, run.config.population.select
  host = lambda tree: sharding.on_host(run.mesh, tree)  # noqa: E731
  test = {k: np.asarray(v, float) for k, v in host(test).items()}
  validation = {k: np.asarray(v, float) for k, v in host(validation).items()}
  preds = np.asarray(host(preds))
  alive = np.asarray(mon.alive)
  best = best_member(mon, validation, alive)
  diverged_at = mon.diverged_at(state)
  steps = int(np.asarray(host(state.step)).max())
  take = jax.jit(lambda tree, i: jax.tree.map(lambda a: a[i], tree),
                 out_shardings=sharding.replicated(run.mesh))
  members = []
  for i, overrides in enumerate(run.members):
    member = {**overrides, "test": _of(test, i) if alive[i] else None}
    if held.separate_test:
      member["validation"] = _of(validation, i) if alive[i] else None
    # A member whose patience ran out at the last evaluation trained every step.
    stopped = mon.stopped_at[i] if (mon.stopped_at[i] or run.total) < run.total else None
    member.update(params_step=None if not alive[i] else (
        mon.best_step[i] if run.config.train.keep_best else stopped or steps),
                  stopped_at=stopped, diverged_at=diverged_at[i])
    if alive[i]:  # the best member's pictures only
      member.update(task.extra_evaluation(run.model, take(params, i), take(run.eval_key, i),
                                          workdir if i == best else None,
                                          sharding.replicated(run.mesh)))
    members.append(member)
  out = {"population": {"members": run.size, "select": select}, "members": members,
         "history": [{"step": step, mon.headline: [_finite(v) for v in mon.history[step]]}
                     for step in sorted(mon.history)]}
  # Each member's test set: the one shared set, or its own (generated from its seed).
  test_set = held.arrays(held.test)
  member_set = (lambda i: test_set) if held.shared else (
      lambda i: jax.tree.map(lambda a: np.asarray(a)[i], host(test_set)))
  out["population"]["best"] = best
  if select == "ensemble":  # every member on one test set (the first member's)
    if not held.shared:
      first = jax.jit(lambda s: jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape), s),
                      out_shardings=jax.tree.map(lambda a: a.sharding, held.test))(held.test)
      preds = np.asarray(host(held.evaluate(params, first)[0]))
    ensembled = np.asarray(ensemble(preds[alive], task.classifies))
    metrics = task.loss_and_metrics(jnp.asarray(ensembled), member_set(0))[1]
    out["test"] = {k: float(v) for k, v in metrics.items()}
    return out, member_set(0), ensembled
  if select == "best":
    out["test"] = members[best]["test"]
  else:
    out["test"] = {k: float(np.mean(v[alive])) for k, v in test.items()}
    out["test_std"] = {k: float(np.std(v[alive])) for k, v in test.items()}
  return out, member_set(best), preds[best]


def best_member(mon, validation: dict[str, np.ndarray], alive: np.ndarray) -> int:
  """The live member with the best validation metric: at its best evaluation with
  `train.keep_best`, else that of its final parameters. Accuracy ties often: the
  cross-entropy then decides; the first member wins what is left of a tie, and when
  no value is finite."""
  def values_of(metric):
    values = validation[metric]
    if mon.keeps_best:
      kept = np.array([(m or {}).get(metric, np.nan) for m in mon.best_metrics])
      values = np.where(np.isnan(kept), values, kept)
    return np.where(alive, values, np.nan)

  values = values_of(mon.metric)
  if np.isnan(values).all():
    return int(np.flatnonzero(alive)[0])
  best = np.nanmax(values) if mon.higher_is_better else np.nanmin(values)
  tied = np.flatnonzero(values == best)
  if len(tied) > 1 and mon.metric == "accuracy" and "xent" in validation:
    return int(tied[np.nanargmin(values_of("xent")[tied])])
  return int(tied[0])


def ensemble(preds, classifies: bool):
  """The members' predictions [K, N, ...] as one [N, ...] (NumPy or JAX, traceable): their
  mean, or for class logits the log of their mean probabilities (whose softmax is that
  mean)."""
  if not classifies:
    return preds.mean(0)
  return jnp.log(jax.nn.softmax(preds, axis=-1).mean(0))


def _of(metrics: dict[str, np.ndarray], i: int) -> dict[str, float]:
  return {k: float(v[i]) for k, v in metrics.items()}


def _finite(value: float) -> float | None:
  return float(value) if np.isfinite(value) else None
