"""The optimizer a config's `train` section describes (optax), and its checks."""

from __future__ import annotations

import ml_collections
import optax

from seqjax.config import validate

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def validate_config(t: ml_collections.ConfigDict) -> None:
  """Checks the optimizer fields of `config.train`; ConfigError naming the field."""
  validate.one_of("train.optimizer", t.optimizer, OPTIMIZERS)
  validate.one_of("train.schedule", t.schedule, SCHEDULES)
  validate.positive_float("train.learning_rate", t.learning_rate)
  validate.non_negative("train.warmup_steps", t.warmup_steps)
  validate.in_range("train.end_lr_factor", t.end_lr_factor, 0.0, 1.0)
  validate.non_negative("train.weight_decay", t.weight_decay)
  validate.non_negative("train.grad_clip", t.grad_clip)


def create(t: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The learning-rate schedule over `total_steps`, the optimizer, and clipping."""
  if t.schedule == "constant":
    lr = optax.constant_schedule(t.learning_rate)
  elif t.schedule == "cosine":
    lr = optax.cosine_decay_schedule(t.learning_rate, total_steps, t.end_lr_factor)
  else:
    lr = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps,
                                            max(total_steps, t.warmup_steps + 1),
                                            t.learning_rate * t.end_lr_factor)
  if t.optimizer == "adam":
    opt = optax.adam(lr)
  elif t.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=t.weight_decay)
  else:
    opt = optax.sgd(lr, momentum=0.9)
  return optax.chain(optax.clip_by_global_norm(t.grad_clip), opt) if t.grad_clip else opt
