"""sine: next-step prediction on random-phase sines.

Each example is sin(linspace(0, width, T + 1) + phase), phase ~ U(0, 2pi);
the input is steps 0..T-1 and the per-step target steps 1..T. Seed
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


def sine_wave(phase: jax.Array, steps: int, width: float) -> jax.Array:
  """[T] values of sin(linspace(0, width, T) + phase)."""
  return jnp.sin(jnp.linspace(0.0, width, steps) + phase)


def make(cfg: ml_collections.ConfigDict, batch_size: int, key: jax.Array) -> base.Task:
  """Builds the task from `config.task` (fields: see configs/sine.py)."""
  validate.positive("task.time_steps", cfg.time_steps)
  validate.positive_float("task.width", cfg.width)
  validate.non_negative("task.train_size", cfg.train_size)
  validate.positive("task.eval_size", cfg.eval_size)
  steps, width = cfg.time_steps, cfg.width

  def example(k):
    s = sine_wave(jax.random.uniform(k, (), maxval=2 * jnp.pi), steps + 1, width)[:, None]
    return {"x": s[:-1], "y": s[1:], "weight": jnp.ones((steps,), jnp.float32)}

  dataset = None
  if cfg.train_size:
    dataset = base.vmap_sample(example, jax.random.fold_in(key, base.DATASET_SALT),
                               cfg.train_size)
  return base.Task(
      name="sine", in_features=1, out_features=1, head="per_step",
      train_batch=base.train_batches(example, batch_size, dataset),
      eval_batch=lambda k: base.vmap_sample(example, k, cfg.eval_size),
      loss_and_metrics=base.regression_loss, metric="mse", plot="sequence",
      steps_per_epoch=base.steps_per_epoch(cfg.train_size, batch_size) if dataset else None,
      info={"target_shift": 0.0, "target_scale": 1.0, "step": width / steps})
