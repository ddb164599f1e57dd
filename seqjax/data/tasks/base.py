"""What every task provides, and the helpers they share.

Shape letters: B batch, T time, I input features, O outputs, N dataset size.

A batch is a dict of arrays:
  x       [B, T, I] inputs
  y       targets: [B, O] (head "last") or [B, T, O] / [B, T] (head "per_step")
  weight  loss weights, [B] or [B, T]: 0 for padding examples (the last,
          partial batch of an epoch) and for steps without a target
  mask    optional [B, T] bool: LSTM steps to run (Keras `Masking`)
  reset   optional [] bool, stateful training only: start from the zero carry
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.data import feed as feed_lib

Batch = dict[str, jax.Array]

# Salts folded into the data key so that training and held-out data never
# share a random stream.
TRAIN_SALT, EVAL_SALT, DATASET_SALT, ROLLOUT_SALT = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Task:
  """An experiment: data, loss and metrics.

  Attributes:
    name: registry name.
    in_features: I.
    out_features: O (classes for a classifier).
    head: "last" or "per_step" (see `seqjax.model.sequence.SequenceModel`).
    train_data: `(key) -> data`, pure JAX, what train batches are cut from:
      a finite dataset built from `fold_in(key, DATASET_SALT)`, or `()` for
      online tasks. Built inside each jitted training call (once per call of
      `programs.make_train_loop`, not per step), so everything stays a function
      of the run's data key and grids of runs vmap over keys.
    batch_from: `(data, key, step) -> Batch`, pure JAX, called inside the
      jitted step with a traced step: online tasks sample fresh examples from
      `fold_in(key, step)`; finite datasets give batch `step` of an epoch.
      `train_batch(key, step)` composes the two.
    eval_batch: `(key, eval_key) -> Batch`, the fixed held-out set (arrays,
      [N, ...]); `key` is the data key (to exclude the training set), new
      examples come from `eval_key`.
    loss_and_metrics: `(preds, batch) -> (loss, {name: value})`, metrics in
      the task's own units (e.g. MAE in cycles for freq).
    metric: the headline held-out metric name, and `higher_is_better`.
    stateful_period: > 0 threads the carry through consecutive train steps
      and resets it every `stateful_period` steps (seed echo's stateful LSTM).
    steps_per_epoch: for finite datasets, else None.
    free_run: > 0 (per-step next-value tasks): training also free-runs this
      many steps after the teacher-forced inputs, feeding predictions back,
      with the loss on the true continuation (fights exposure bias); the
      batch's `y` and `weight` then cover T + free_run steps.
    eval_free_run: the same at evaluation (forecasting: the horizon after a
      window); the validation and test sets' `y` and `weight` then cover T +
      eval_free_run.
    causal: the targets are later inputs (next-value prediction), so a model
      may read only the past: no bidirectional LSTM.
    baselines: `() -> {name: predictions [N, ...] on the test set}`, the field's
      simple answers that results.json and the verdict set beside the model (a
      `seqjax.data.baselines.Skipped` in place of one too large to compute); none
      for a generated task.
    folds: > 0 when the training examples carry cross-validation folds
      (`batch["fold"]`): member m of a population validates on fold m % folds
      and trains on the others (`seqjax.data.folds`).
    level_features: > 0 when the inputs are read two ways: the first this many
      features carry each sequence's level, the rest its shape (what
      `model.view_dropout` zeroes the first of; see `SequenceModel`).

  A task that draws its predictions or evaluates more than its metrics
  subclasses `Task` and overrides `plot` and `extra_evaluation`.
  """
  name: str
  in_features: int
  out_features: int
  head: str
  batch_from: Callable[[Any, jax.Array, jax.Array], Batch]
  eval_batch: Callable[[jax.Array, jax.Array], Batch]
  loss_and_metrics: Callable[[jax.Array, Batch], tuple[jax.Array, dict[str, jax.Array]]]
  metric: str
  higher_is_better: bool = False
  stateful_period: int = 0
  steps_per_epoch: int | None = None
  free_run: int = 0
  train_data: Callable[[jax.Array], Any] = lambda key: ()
  eval_free_run: int = 0
  causal: bool = False
  baselines: Callable[[], dict[str, Any]] = dict
  folds: int = 0
  level_features: int = 0

  @property
  def classifies(self) -> bool:
    """True when predictions are class logits (the metric is accuracy)."""
    return self.metric == "accuracy"

  @property
  def outputs(self) -> str:
    """What the model gives, in words (the model summary's last part)."""
    what = f"{self.out_features} output{'s' if self.out_features > 1 else ''}"
    return what + (" a step" if self.head == "per_step" else " a sequence")

  @property
  def selection(self) -> tuple[str, bool]:
    """The held-out metric that picks the best step (early stopping, `train.keep_best`),
    and whether higher is better."""
    return self.metric, self.higher_is_better

  def feed(self, batch_size: int, seed: int, mesh, steps: int):
    """What brings training batches to the devices: here nothing (`feed.OnDevice`), since
    they are made inside the train loop; a task of files sends them from the host."""
    del batch_size, seed, mesh, steps
    return feed_lib.OnDevice()

  def held_out(self, sets):
    """The run's validation and test sets, made by `sets` (`seqjax.train.driver.HeldOutSets`):
    here one set of new examples, generated on the devices from each member's eval key
    (`eval_batch`), that serves as both."""
    return sets.generated()

  def train_batch(self, key: jax.Array, step: jax.Array) -> Batch:
    """Train batch `step` from the run's data key (builds `train_data` first)."""
    return self.batch_from(self.train_data(key), key, step)

  def plot(self, eval_set: Batch, preds: np.ndarray, workdir: str) -> None:
    """Draws the held-out predictions [N, ...] into `workdir` (by default, nothing)."""
    del eval_set, preds, workdir

  def save(self, workdir: str) -> None:
    """Writes what predicting with the run needs beyond its config (by default, nothing)."""
    del workdir

  def check_resume(self, workdir: str) -> None:
    """Raises ConfigError when `workdir` holds a run of this config on other data (by
    default the data is generated from the config: nothing to check)."""
    del workdir

  def extra_evaluation(self, model, params, key: jax.Array, workdir: str | None,
                       placement: jax.sharding.Sharding | None = None) -> dict[str, Any]:
    """Held-out evaluation beyond the metrics, after training (by default, none).

    Args:
      model, params: the trained model and its parameters.
      key: the run's eval key (a salt of its own keeps new data apart).
      workdir: where to draw pictures (None: draw nothing).
      placement: sharding of any held-out arrays it builds.

    Returns:
      Entries for `results.json` (e.g. {"rollout": {...}}).
    """
    del model, params, key, workdir, placement
    return {}


@dataclasses.dataclass(frozen=True)
class ScalarTask(Task):
  """A task that regresses one number per sequence (head "last", y [B, 1]).

  It learns the normalised target `(y - target_shift) / target_scale`;
  `plot` draws predicted against true, in the target's units.
  """
  target_shift: float = 0.0
  target_scale: float = 1.0
  target_name: str = "target"

  def plot(self, eval_set: Batch, preds: np.ndarray, workdir: str) -> None:
    from seqjax.runtime import plots  # matplotlib: imported when first drawing
    plots.predicted_vs_true(np.asarray(eval_set["y"])[:, 0],
                            preds[:, 0] * self.target_scale + self.target_shift,
                            os.path.join(workdir, "predictions.png"), self.target_name)


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean of `values` [B, ...] weighted by `weight` (broadcast from the left)."""
  weight = weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim))
  weight = jnp.broadcast_to(weight, values.shape)
  return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def regression_loss(preds: jax.Array, batch: Batch, shift: float = 0.0,
                    scale: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MSE on normalised targets `(y - shift) / scale`; MSE/MAE in target units.

  `preds` are in normalised units; with shift 0 and scale 1 this is plain MSE.
  """
  y = batch["y"]
  err_norm = preds - (y - shift) / scale
  err = err_norm * scale
  w = batch["weight"]
  loss = weighted_mean(err_norm**2, w)
  return loss, {"mse": weighted_mean(err**2, w), "mae": weighted_mean(jnp.abs(err), w)}


def classification_loss(logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Softmax cross-entropy on integer labels; accuracy."""
  labels = batch["y"]
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  w = batch["weight"]
  acc = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return weighted_mean(nll, w), {"xent": weighted_mean(nll, w), "accuracy": weighted_mean(acc, w)}


def epoch_batch(data: Batch, key: jax.Array, step: jax.Array, batch_size: int,
                shuffle: bool = True) -> Batch:
  """Batch `step` of a finite dataset, Keras `fit` order.

  Each epoch is a fresh permutation (`shuffle`), cut into ceil(N / batch)
  batches; the last one is padded with repeated examples of weight 0, so the
  loss averages only over the real ones as Keras' partial batch does.
  """
  n = jax.tree.leaves(data)[0].shape[0]
  per_epoch = -(-n // batch_size)
  epoch, i = step // per_epoch, step % per_epoch
  order = jax.random.permutation(jax.random.fold_in(key, epoch), n) if shuffle else jnp.arange(n)
  pos = i * batch_size + jnp.arange(batch_size)
  idx = order[jnp.minimum(pos, n - 1)]
  batch = jax.tree.map(lambda a: a[idx], data)
  valid = (pos < n).astype(jnp.float32)
  batch["weight"] = batch["weight"] * valid.reshape(valid.shape + (1,) * (batch["weight"].ndim - 1))
  return batch


def steps_per_epoch(n: int, batch_size: int) -> int:
  return -(-n // batch_size)


def vmap_sample(fn: Callable[[jax.Array], Batch], key: jax.Array, n: int) -> Batch:
  """`n` independent examples of `fn(key) -> example`, vmapped."""
  return jax.vmap(fn)(jax.random.split(key, n))


def train_source(example: Callable[[jax.Array], Batch], batch_size: int,
                 dataset: Callable[[jax.Array], Batch] | None = None) -> dict[str, Callable]:
  """A task's `train_data` and `batch_from` (keyword arguments of `Task`).

  Online (no `dataset`): `batch_size` fresh examples from `fold_in(key, step)`.
  Finite: batch `step` of the epochs of `dataset(fold_in(key, DATASET_SALT))`
  (see `epoch_batch`).
  """
  if dataset is None:
    return {"batch_from": lambda data, key, step: vmap_sample(
        example, jax.random.fold_in(key, step), batch_size)}
  return {"train_data": lambda key: dataset(jax.random.fold_in(key, DATASET_SALT)),
          "batch_from": lambda data, key, step: epoch_batch(data, key, step, batch_size)}
