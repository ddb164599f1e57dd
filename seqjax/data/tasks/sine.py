"""sine: next-step prediction on random-phase sines.

Each example is sin(phase + t * width / T) for t = 0..T, phase ~ U(0, 2pi)
(the seed's linspace(0, width, T + 1) + phase); the input is steps 0..T-1
and the per-step target steps 1..T. With `free_run = K` the targets go on
for K more steps, which training generates by feeding predictions back.
The rollout set: `rollout_size` held-out phases, `rollout_warmup` true steps,
then the true continuation up to the largest horizon. Seed
`sine_next_step_and_stateful_rollout`: 1000 sequences of 50 steps spanning
pi/2, 2x LSTM(32) + per-step Dense, 50 epochs, batch 32. Held-out phases come
from a separate key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax.config import validate
from seqjax.data.tasks import base
from seqjax.model import rollout
from seqjax.runtime import sharding, writers


@dataclasses.dataclass(frozen=True)
class SineTask(base.Task):
  """Next-step prediction whose model is also judged free-running.

  Attributes:
    rollout_set: `(key) -> (prefix [N, W, I], truth [N, steps, O])`, held-out
      true prefixes and their continuations.
    rollout_horizons: horizons (steps after the prefix) to report.
  """
  rollout_set: Callable[[jax.Array], tuple[jax.Array, jax.Array]] | None = None
  rollout_horizons: tuple[int, ...] = ()

  def plot(self, eval_set: base.Batch, preds: np.ndarray, workdir: str) -> None:
    from seqjax.runtime import plots  # matplotlib: imported when first drawing
    plots.sequences(np.asarray(eval_set["x"])[..., 0], np.asarray(eval_set["y"])[..., 0],
                    preds[..., 0], os.path.join(workdir, "teacher_forced.png"),
                    "held-out next-step prediction (teacher forced)")

  def extra_evaluation(self, model, params, key: jax.Array, workdir: str | None,
                       placement: jax.sharding.Sharding | None = None) -> dict[str, Any]:
    """Free-running RMSE at each horizon on held-out prefixes; prints a table and plots."""
    prefix, truth = jax.jit(
        lambda k: self.rollout_set(jax.random.fold_in(k, base.ROLLOUT_SALT)),
        out_shardings=placement)(key)
    preds = rollout.rollout(model, params, prefix, truth.shape[1])
    rmse = rollout.horizon_rmse(preds, truth, self.rollout_horizons)
    writers.console(f"free-running rollout, {prefix.shape[0]} held-out sequences, "
                    f"{prefix.shape[1]}-step warm-up:")
    writers.console("| horizon | " + " | ".join(str(h) for h in self.rollout_horizons) + " |")
    writers.console("|---|" + "---|" * len(self.rollout_horizons))
    writers.console("| RMSE | " + " | ".join(f"{v:.4f}" for v in rmse.values()) + " |")
    if workdir is not None and sharding.is_writer():
      from seqjax.runtime import plots
      plots.rollout(np.asarray(prefix)[..., 0], np.asarray(truth)[..., 0],
                    np.asarray(preds)[..., 0], os.path.join(workdir, "rollout.png"))
    return {"rollout": {"warmup": int(prefix.shape[1]), "sequences": int(prefix.shape[0]),
                        **rmse}}


def make(cfg: ml_collections.ConfigDict, batch_size: int) -> base.Task:
  """Builds the task from `config.task` (fields: see configs/sine.py)."""
  validate.positive("task.time_steps", cfg.time_steps)
  validate.positive_float("task.width", cfg.width)
  validate.non_negative("task.train_size", cfg.train_size)
  validate.positive("task.eval_size", cfg.eval_size)
  validate.non_negative("task.free_run", cfg.free_run)
  validate.positive("task.rollout_warmup", cfg.rollout_warmup)
  validate.positive("task.rollout_size", cfg.rollout_size)
  for h in cfg.rollout_horizons:
    validate.positive("task.rollout_horizons", h)
  steps, width = cfg.time_steps, cfg.width
  dt = width / steps  # phase advance per step

  def phase(k):
    return jax.random.uniform(k, (), maxval=2 * jnp.pi)

  def example(k, free_run=cfg.free_run):
    # Inputs: T true steps; targets: the next T values, then `free_run` more.
    s = jnp.sin(phase(k) + dt * jnp.arange(steps + 1 + free_run))[:, None]
    return {"x": s[:steps], "y": s[1:], "weight": jnp.ones((steps + free_run,), jnp.float32)}

  def rollout_set(k):
    warm, n = cfg.rollout_warmup, max(cfg.rollout_horizons)
    phases = jax.random.uniform(k, (cfg.rollout_size, 1), maxval=2 * jnp.pi)
    s = jnp.sin(phases + dt * jnp.arange(warm + n)[None, :])[..., None]
    return s[:, :warm], s[:, warm:]

  dataset = (lambda k: base.vmap_sample(example, k, cfg.train_size)) if cfg.train_size else None
  return SineTask(
      name="sine", in_features=1, out_features=1, head="per_step",
      **base.train_source(example, batch_size, dataset),
      eval_batch=lambda key, eval_key: base.vmap_sample(lambda k: example(k, 0), eval_key,
                                                        cfg.eval_size),
      loss_and_metrics=base.regression_loss, metric="mse",
      steps_per_epoch=base.steps_per_epoch(cfg.train_size, batch_size) if dataset else None,
      free_run=cfg.free_run, causal=True, rollout_set=rollout_set,
      rollout_horizons=tuple(cfg.rollout_horizons))
