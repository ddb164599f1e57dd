"""What the driver reports to: one model, or a population of M members trained together.

After each call of the train loop the monitor checks its totals, makes the
logged scalars, evaluates on the validation set and decides early stopping, per
member:

- a NaN/Inf loss or gradient stops a single model's run (FloatingPointError);
  in a population it freezes that member (`programs.make_population_train_loop`),
  which is reported, and the others train on;
- the best validation evaluation of each member is kept: with `train.keep_best`
  its parameters are kept as they improve (a population's as one stacked tree),
  and go to a `checkpoint.ParamsStore` with each checkpoint and when training ends
  (`save_best`); with `train.early_stopping = P` a member stops after P
  evaluations without improvement (Keras
  `EarlyStopping(patience=P, restore_best_weights=True)`), or after
  `train.early_stopping_steps` steps without it where that comes first; a stopped member
  of a population trains no further (its updates are scaled by 0) and the
  run ends when every member has stopped or diverged;
- metrics are logged per member (`mae/3`) beside their median (`mae`).

A resumed run reads the evaluations before its checkpoint back from
`metrics.jsonl`, so its decisions equal an uninterrupted run's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.runtime import sharding, writers
from seqjax.train import checkpoint

_META = ("step", "split", "time")


class Monitor:
  """The driver's reports for a run of `run.size` members (`planning.Run`).

  Attributes:
    metric, higher_is_better: the metric that picks each member's best evaluation.
    headline: the task's headline metric, whose values `history` keeps.
    keeps_best: whether each member's best parameters are kept (`train.keep_best`).
    best_step, best_metrics: per member, the step and metrics of its best evaluation.
    history: step -> [M] values of the task's headline metric (NaN: diverged).
    alive: [M] bool, False for a member whose training became NaN/Inf.
    stopped_at: per member, the evaluation step after which it stopped early, or None.
  """

  def __init__(self, run, evaluate, eval_set, writer: writers.MetricWriter,
               ckpt: checkpoint.Checkpointer, *, state, best: checkpoint.ParamsStore | None = None,
               history: tuple[dict, ...] | list[dict] = ()):
    """
    Args:
      run: the `planning.Run` (one model, or a population when `run.grid`).
      evaluate, eval_set: the run's compiled evaluation and its validation set.
      writer, ckpt: where metrics and checkpoints go.
      state: the restored (or fresh) train state; a population's divergence marks.
      best: where the best parameters go (`train.keep_best`, `save_best`), or None.
      history: the run's metric records up to its checkpoint (a resumed run's).
    """
    self._run, self._evaluate, self._eval_set = run, evaluate, eval_set
    self._writer, self._ckpt, self._best = writer, ckpt, best
    self._population = run.grid
    self.size = run.size
    self.metric, self.higher_is_better = run.task.selection
    self.headline = run.task.metric
    self.keeps_best = best is not None
    self._patience = run.config.train.early_stopping
    self._patience_steps = run.config.train.early_stopping_steps
    self.best_step: list[int | None] = [None] * self.size
    self.best_metrics: list[dict[str, float] | None] = [None] * self.size
    self._since_best = [0] * self.size
    self.stopped_at: list[int | None] = [None] * self.size
    self.history: dict[int, list[float]] = {}
    self._tracked: set[int] = set()  # evaluated steps (a rerun evaluates its last again)
    self.alive = np.ones(self.size, bool)
    self._best_params = None
    self._unsaved: int | None = None  # the step of best parameters not yet in the store
    self.steps_per_epoch = run.task.steps_per_epoch or 0
    self._latest: tuple[int, float] | None = None  # (step, headline metric or its median)
    if best is not None:  # a copy of its own: the state's buffers are donated to the loop
      self._copy = jax.jit(lambda p: jax.tree.map(lambda a: jnp.array(a, copy=True), p),
                           out_shardings=run.state_sharding.params)
    if self._population:
      mesh = run.mesh
      self.alive = self._diverged_at(state) < 0
      split = NamedSharding(mesh, P(sharding.MODEL))
      self._masked_lr = jax.jit(lambda s, keep: jnp.where(keep, s, 0.0), out_shardings=split)
      self._lr_scale, self._frozen = run.lr_scale, None
      if best is not None:
        self._keep = jax.jit(
            lambda old, new, better: jax.tree.map(
                lambda o, n: jnp.where(better.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                old, new), out_shardings=run.state_sharding.params)
        self._best_params = (best.restore(state.params)[1] if best.latest_step() is not None
                             else self._copy(state.params))
    for record in history:
      if record["split"] == "validation":
        metrics = self._unpack(record)
        if self.metric in metrics:
          self._track(record["step"], metrics)

  # --- what the driver calls -------------------------------------------------------------

  def check(self, step: int, totals: dict[str, Any]) -> bool:
    """After each call: a single model's NaN raises, a population's is reported (and
    raises once every member diverged)."""
    if not self._population:
      if not totals["finite"]:
        raise FloatingPointError(
            f"loss or gradients became NaN/Inf at step {step} (steps before it were finite; "
            f"last checkpoint: step {self._ckpt.latest_step() or 'none'}); "
            "lower train.learning_rate or set train.grad_clip")
      return True
    alive = np.asarray(totals["alive"])
    for i in np.flatnonzero(self.alive & ~alive):
      writers.console(f"member {i} ({self._run.members[i]}) diverged (NaN/Inf) by step {step}; "
                      "frozen, the others go on")
    self.alive = alive
    if not alive.any():
      raise FloatingPointError(
          f"loss or gradients of every member became NaN/Inf by step {step} (last "
          f"checkpoint: step {self._ckpt.latest_step() or 'none'}); lower "
          "train.learning_rate (or population.learning_rates) or set train.grad_clip")
    return True

  def loop_args(self, args: tuple) -> tuple:
    """The train loop's arguments: a population's stopped members get a zero learning rate."""
    if not self._population:
      return args
    frozen = tuple(s is not None for s in self.stopped_at)
    if frozen != self._frozen:
      self._frozen = frozen
      self._lr_scale = self._masked_lr(self._run.lr_scale, ~np.asarray(frozen))
    *head, _ = args
    return (*head, self._lr_scale)

  def train_scalars(self, sums: dict[str, Any], steps: int) -> dict[str, float]:
    """The mean of each metric over the last `steps` steps; in a population, each
    member's loss and the median over the members still training."""
    if not self._population:
      return {k: float(v) / steps for k, v in sums.items()}
    loss = np.asarray(sums["loss"], float) / steps
    training = self.alive & np.array([s is None for s in self.stopped_at])
    return {"loss": float(np.median(loss[training])) if training.any() else float("nan"),
            **{f"loss/{i}": float(loss[i]) for i in np.flatnonzero(training)},
            "diverged": float(np.sum(~self.alive))}

  def evaluate(self, step: int, state, quiet: bool = False) -> tuple[Any, dict[str, Any]]:
    """(validation predictions, metrics) at `step`, logged; metrics are floats, or [M]
    arrays in a population (NaN for a diverged member). `quiet`: no console line (the
    next progress line carries `summary()`)."""
    if not self._population:
      preds, metrics = self._evaluate(state.params, self._eval_set)
      metrics = {k: float(v) for k, v in metrics.items()}
      if step not in self._tracked:  # a rerun of a finished run has its line already
        self._writer.write(step, "validation", metrics)
      self._latest = (step, metrics[self.headline])
      if not quiet:
        writers.console(f"validation at step {step}: "
                        + " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
      if (self._track(step, {k: np.asarray([v]) for k, v in metrics.items()})[0]
          and self._best is not None):
        self._best_params, self._unsaved = self._copy(state.params), step
      return preds, metrics
    preds, metrics = self._evaluate(state.params, self._eval_set)
    self.alive = self._diverged_at(state) < 0
    metrics = {k: np.where(self.alive, np.asarray(v, float), np.nan)
               for k, v in jax.device_get(metrics).items()}
    if step not in self._tracked:
      self._writer.write(step, "validation", self._pack(metrics))
    value = metrics[self.headline]
    median = float(np.nanmedian(value)) if self.alive.any() else float("nan")
    self._latest = (step, median)
    if not quiet:
      writers.console(f"validation at step {step}: {self.headline} median {median:.5g} "
                      f"over {self.size} members ({int(np.sum(~self.alive))} diverged)")
    better = self._track(step, metrics)
    if self._best is not None and better.any():
      self._best_params, self._unsaved = self._keep(self._best_params, state.params, better), step
    return preds, metrics

  def save_best(self) -> None:
    """Writes the best parameters kept since the last call (`train.keep_best`) to the
    run's `checkpoint.ParamsStore`. The driver calls it with each checkpoint and when
    training ends: an orbax save at every improvement cost more than training a small
    file, and a resumed run's store then holds what its checkpoint's evaluations chose."""
    if self._best is None or self._unsaved is None:
      return
    self._ckpt.wait()  # one orbax manager committing at a time (see ParamsStore)
    self._best.save(self._unsaved, self._best_params)
    self._unsaved = None

  def stop_early(self) -> bool:
    """After an evaluation: True to end training (every member stopped or diverged)."""
    if not self._patience:
      return False
    if not self._population:
      return self.stopped_at[0] is not None
    return all(s is not None or not a for s, a in zip(self.stopped_at, self.alive, strict=True))

  # --- what the run reports -----------------------------------------------------------------

  def diverged_at(self, state) -> list[int | None]:
    """Per member, the step whose loss or gradients were first NaN/Inf, or None."""
    if not self._population:
      return [None]
    return [int(d) if d >= 0 else None for d in self._diverged_at(state)]

  def summary(self) -> str:
    """The latest validation figure and the best so far, for a progress line ("" before
    the first evaluation): a population's as the median over its members."""
    if self._latest is None:
      return ""
    step, value = self._latest
    text = f"validation {self.headline}={value:.4g} at step {step}"
    bests = [b[self.headline] for b in self.best_metrics if b is not None]
    if not bests:
      return text
    if self._population:
      return text + f" (best median {float(np.nanmedian(bests)):.4g})"
    return text + f" (best {bests[0]:.4g} at step {self.best_step[0]})"

  @property
  def best_params(self):
    """A population's best parameters so far ([M] stacked), with `train.keep_best`."""
    return self._best_params

  # --- inside ------------------------------------------------------------------------------

  def _diverged_at(self, state) -> np.ndarray:
    return np.asarray(sharding.on_host(self._run.mesh, state.diverged_at))

  def _track(self, step: int, metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Records an evaluation ([M] values per metric); returns which members improved."""
    better = np.zeros(self.size, bool)
    if step in self._tracked:  # the same evaluation again: no new evidence
      return better
    self._tracked.add(step)
    for i in range(self.size):
      value = float(metrics[self.metric][i])
      if self.stopped_at[i] is not None or (self._population and np.isnan(value)):
        continue  # a diverged member's NaN is not an evaluation
      best = self.best_metrics[i]
      better[i] = best is None or (value > best[self.metric] if self.higher_is_better
                                   else value < best[self.metric])
      if better[i]:
        self.best_step[i], self._since_best[i] = step, 0
        self.best_metrics[i] = {k: float(v[i]) for k, v in metrics.items()}
      else:
        self._since_best[i] += 1
      if self._patience and (self._since_best[i] >= self._patience or (
          self._patience_steps and step - self.best_step[i] >= self._patience_steps)):
        self.stopped_at[i] = step
    if self.headline in metrics:
      self.history[step] = [float(v) for v in metrics[self.headline]]
    return better

  def _pack(self, metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """A population's metrics as logged: the median of each, and each live member's."""
    out = {}
    for name, values in metrics.items():
      out[name] = float(np.nanmedian(values)) if self.alive.any() else float("nan")
      out.update({f"{name}/{i}": float(values[i]) for i in np.flatnonzero(self.alive)})
    return out

  def _unpack(self, record: dict) -> dict[str, np.ndarray]:
    """A logged evaluation back as [M] arrays (NaN where a member was not logged)."""
    scalars = {k: v for k, v in record.items() if k not in _META}
    if not self._population:
      return {k: np.asarray([v], float) for k, v in scalars.items()}
    names = [k for k in scalars if "/" not in k]
    return {name: np.asarray([scalars.get(f"{name}/{i}", np.nan) for i in range(self.size)],
                             float) for name in names}
