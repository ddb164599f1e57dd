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

import jax
import jax.numpy as jnp
import ml_collections

from seqjax import validate
from seqjax.tasks import base


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
  return base.Task(
      name="sine", in_features=1, out_features=1, head="per_step",
      **base.train_source(example, batch_size, dataset),
      eval_batch=lambda key, eval_key: base.vmap_sample(lambda k: example(k, 0), eval_key,
                                                        cfg.eval_size),
      loss_and_metrics=base.regression_loss, metric="mse", plot="sequence",
      steps_per_epoch=base.steps_per_epoch(cfg.train_size, batch_size) if dataset else None,
      free_run=cfg.free_run, rollout_set=rollout_set,
      rollout_horizons=tuple(cfg.rollout_horizons),
      info={"target_shift": 0.0, "target_scale": 1.0, "step": dt})
