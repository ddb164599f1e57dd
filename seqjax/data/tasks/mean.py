"""mean: read a step sequence 0..0 1..1 of length L, output its mean.

The L + 1 possible sequences are the rows of triu(ones(L + 1, L)): row k is
k zeros then L - k ones, mean (L - k) / L. A fixed permutation of them gives
`train_size` training sequences; the held-out set is drawn from the rest, so
no held-out sequence is ever trained on. Seed `mean_of_step_sequence`: L=2000,
50 samples (10% of them held out), Keras `Masking(0)`, batch 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from seqjax.config import validate
from seqjax.data.tasks import base


def step_sequences(k: jax.Array, length: int) -> jax.Array:
  """Rows k of triu(ones(L + 1, L)): [N] indices -> [N, L, 1]."""
  return (jnp.arange(length)[None, :] >= k[:, None]).astype(jnp.float32)[..., None]


def make(cfg: ml_collections.ConfigDict, batch_size: int) -> base.Task:
  """Builds the task from `config.task` (fields: see configs/mean.py)."""
  validate.positive("task.length", cfg.length)
  validate.positive("task.train_size", cfg.train_size)
  validate.positive("task.eval_size", cfg.eval_size)
  length = cfg.length
  if cfg.train_size >= length + 1:
    validate.fail("task.train_size", cfg.train_size,
                  f"must be < length + 1 = {length + 1}, the number of distinct sequences, "
                  "to leave any for the held-out set")

  def split(key):  # a fixed permutation of all L + 1 sequences: training set, then held out
    order = jax.random.permutation(jax.random.fold_in(key, base.DATASET_SALT), length + 1)
    return order[:cfg.train_size], order[cfg.train_size:][:cfg.eval_size]

  def examples(idx):
    x = step_sequences(idx, length)
    batch = {"x": x, "y": ((length - idx) / length).astype(jnp.float32)[:, None],
             "weight": jnp.ones(idx.shape, jnp.float32)}
    if cfg.mask_zeros:  # Keras Masking(mask_value=0): zero steps leave the carry as it is
      batch["mask"] = x[..., 0] != 0
    return batch

  def batch_from(train_idx, k, step):
    # Only indices travel through the epoch shuffle; sequences are built on device.
    idx = base.epoch_batch({"i": train_idx, "weight": jnp.ones_like(train_idx, jnp.float32)},
                           k, step, batch_size)
    return examples(idx["i"]) | {"weight": idx["weight"]}

  shift, scale = (0.5, 0.5) if cfg.normalize_targets else (0.0, 1.0)
  return base.ScalarTask(
      name="mean", in_features=1, out_features=1, head="last",
      train_data=lambda k: split(k)[0], batch_from=batch_from,
      eval_batch=lambda key, eval_key: examples(split(key)[1]),
      loss_and_metrics=lambda p, b: base.regression_loss(p, b, shift, scale),
      metric="mae",
      steps_per_epoch=base.steps_per_epoch(cfg.train_size, batch_size),
      target_shift=shift, target_scale=scale, target_name="mean")
