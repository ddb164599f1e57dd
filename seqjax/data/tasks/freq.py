"""freq: read a sine `sin(f * linspace(o, 2pi + o, T))`, output its frequency f.

Seed `frequency_regression`: f in 1..max_freq-1, 10 sines each, o ~ U(0, 1).
Held-out: the same integer frequencies with new random offsets.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from seqjax.config import validate
from seqjax.data.tasks import base


def nyquist(time_steps: int) -> float:
  """Highest frequency `time_steps` samples over 2pi resolve: (T - 1) / 2."""
  return (time_steps - 1) / 2


def sine(freq: jax.Array, offset: jax.Array, time_steps: int) -> jax.Array:
  """[T] samples of sin(f * linspace(o, 2pi + o, T))."""
  return jnp.sin(freq * jnp.linspace(offset, 2 * jnp.pi + offset, time_steps))


def _examples(freqs: jax.Array, offsets: jax.Array, time_steps: int) -> base.Batch:
  x = jax.vmap(lambda f, o: sine(f, o, time_steps))(freqs, offsets)
  n = freqs.shape[0]
  return {"x": x[..., None], "y": freqs.astype(jnp.float32)[:, None],
          "weight": jnp.ones((n,), jnp.float32)}


def make(cfg: ml_collections.ConfigDict, batch_size: int) -> base.Task:
  """Builds the task from `config.task` (fields: see configs/freq.py)."""
  validate.positive("task.time_steps", cfg.time_steps)
  limit = nyquist(cfg.time_steps)
  if not isinstance(cfg.max_freq, int) or not 2 <= cfg.max_freq or cfg.max_freq - 1 >= limit:
    validate.fail("task.max_freq", cfg.max_freq,
                  f"allowed 2..{math.ceil(limit)}: frequencies up to max_freq-1 must stay below "
                  f"the aliasing limit {limit} of {cfg.time_steps} samples over 2pi")
  validate.non_negative("task.per_freq", cfg.per_freq)
  validate.positive("task.eval_per_freq", cfg.eval_per_freq)
  max_freq, steps = cfg.max_freq, cfg.time_steps

  def example(k):
    kf, ko = jax.random.split(k)
    f = jax.random.randint(kf, (1,), 1, max_freq)
    return jax.tree.map(lambda a: a[0], _examples(f, jax.random.uniform(ko, (1,)), steps))

  def fixed_set(k, per_freq):
    freqs = jnp.tile(jnp.arange(1, max_freq), per_freq)
    return _examples(freqs, jax.random.uniform(k, freqs.shape), steps)

  dataset = (lambda k: fixed_set(k, cfg.per_freq)) if cfg.per_freq else None
  # Normalised targets keep the regression well scaled at any max_freq.
  shift, scale = (max_freq / 2, max_freq / 2) if cfg.normalize_targets else (0.0, 1.0)
  return base.ScalarTask(
      name="freq", in_features=1, out_features=1, head="last",
      **base.train_source(example, batch_size, dataset),
      eval_batch=lambda key, eval_key: fixed_set(eval_key, cfg.eval_per_freq),
      loss_and_metrics=lambda p, b: base.regression_loss(p, b, shift, scale),
      metric="mae",
      steps_per_epoch=(base.steps_per_epoch((max_freq - 1) * cfg.per_freq, batch_size)
                       if cfg.per_freq else None),
      target_shift=shift, target_scale=scale, target_name="frequency")
