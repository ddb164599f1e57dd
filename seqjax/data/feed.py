"""Batches from host memory to the devices, for tasks whose data comes from files.

`Feed` gathers the training batches of a step range on the host (numpy),
puts them on the mesh split along `data`, and prepares the next chunk in a
thread while the devices run the current one. `Evaluator` predicts a held-out
set batch by batch. Only a chunk of batches is on the devices at a time, so a
file larger than device memory trains, and the compiled programs do not grow
with the file.

Batch order is Keras `fit`'s: each epoch a fresh permutation of the training
examples from (seed, epoch), cut into ceil(N / B) batches, the last one padded
with repeats of weight 0. Batch `s` is a function of `s` alone, so a resumed
run reads the same batches as an uninterrupted one.

Why not `grain`: for data that fits in host memory, one numpy fancy-index
gathers a batch far faster than grain's `MapDataset` (shuffle, batch) does, whose
time per batch is that of a whole GPU train step (`python bench/feed.py`; the
figures are in docs/speed.md).
"""

from __future__ import annotations

import concurrent.futures
import sys
from typing import Any

import jax
import numpy as np

from seqjax.data import folds as folds_lib
from seqjax.runtime import sharding

# Host-fed batches on device at once: at most this many steps, and about this many bytes.
MAX_CHUNK_STEPS = 256
CHUNK_BYTES = 32 * 2**20


class Order:
  """Which training examples make batch `step` (Keras `fit` order, reshuffled each epoch)."""

  def __init__(self, size: int, batch_size: int, seed: int):
    self.size, self.batch_size, self.seed = size, batch_size, seed
    self.per_epoch = -(-size // batch_size)
    self._epoch, self._perm = None, None

  def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(example indices [B], valid [B] bool) of batch `step`."""
    epoch, i = divmod(step, self.per_epoch)
    if epoch != self._epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
      self._epoch = epoch
    pos = i * self.batch_size + np.arange(self.batch_size)
    return self._perm[np.minimum(pos, self.size - 1)], pos < self.size


def pad_weight(batch: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
  """Zero weight for the padding examples of a batch."""
  w = batch["weight"]
  batch["weight"] = w * valid.reshape(valid.shape + (1,) * (w.ndim - 1)).astype(w.dtype)
  return batch


def chunk_steps(sample: dict[str, Any], steps: int) -> int:
  """K: batches a chunk holds, from the size of one batch, at most `steps`."""
  nbytes = sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in sample.values())
  return int(max(1, min(MAX_CHUNK_STEPS, steps, CHUNK_BYTES // max(nbytes, 1))))


def put(tree, shard: jax.sharding.Sharding):
  """Host arrays onto devices: each process's devices take their part of the global array."""
  return jax.tree.map(
      lambda a: jax.make_array_from_callback(a.shape, shard, lambda idx, a=a: a[idx]), tree)


class OnDevice:
  """The feed of a task whose batches are made on the devices, inside the train loop
  (`Task.train_data`, `Task.batch_from`): nothing to send, no limit on a call's steps.
  The driver treats it as it treats a `Feed`."""
  steps = sys.maxsize
  abstract_inputs: tuple = ()

  def inputs(self, start: int) -> tuple:
    del start
    return ()

  def prefetch(self, start: int) -> None:
    del start

  def close(self) -> None:
    pass


class Feed:
  """Chunks of K training batches, [K, B, ...] arrays split along `data`, one step ahead.

  `chunk(start)` returns batches start .. start + K - 1 (started beforehand by
  `prefetch(start)` when it was called with the same start); `inputs(start)` is
  that chunk as the train loop's last argument, as `OnDevice` gives none.
  """

  def __init__(self, examples, batch_size: int, seed: int, mesh, steps: int):
    self._examples = examples
    self._order = Order(examples.size, batch_size, seed)
    sample = examples.gather(np.zeros((batch_size,), np.int64))
    self.steps = chunk_steps(sample, steps)
    self._shard = sharding.batch_chunks(mesh)
    self.abstract = {k: jax.ShapeDtypeStruct((self.steps, *v.shape), v.dtype,
                                             sharding=self._shard) for k, v in sample.items()}
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="feed")
    self._next = None  # (start, future)

  def _build(self, start: int):
    batches = []
    for step in range(start, start + self.steps):
      idx, valid = self._order(step)
      batches.append(pad_weight(self._examples.gather(idx), valid))
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    return put(stacked, self._shard)

  def prefetch(self, start: int) -> None:
    """Starts building the chunk at `start` in the background."""
    if self._next is None or self._next[0] != start:
      self._next = (start, self._pool.submit(self._build, start))

  def chunk(self, start: int):
    """The chunk at `start` (built now unless prefetched)."""
    self.prefetch(start)
    future = self._next[1]
    self._next = None
    return future.result()

  @property
  def abstract_inputs(self) -> tuple:
    """The types of `inputs(start)`, to compile the train loop for."""
    return (self.abstract,)

  def inputs(self, start: int) -> tuple:
    return (self.chunk(start),)

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)


class Evaluator:
  """`(params, examples) -> (preds [N, ...] numpy, metrics)`: a held-out set from the host.

  Batches of `batch_size`, or of the whole set when it is smaller (rounded up
  to the data-parallel devices), the last padded with repeats of the last
  example, go through one compiled `predict`; the task's metrics then see the whole
  set's predictions and targets (not its inputs). With `members`, `params` are a
  population's, stacked [M, ...]: every member predicts the same examples, giving
  preds [M, N, ...] and metrics [M]; with `folds`, a set whose examples carry
  cross-validation folds gives each member the metrics of its own fold.
  """

  def __init__(self, predict, loss_and_metrics, mesh, batch_size: int, members: bool = False,
               folds: int = 0):
    self._batch_size, self._members, self._mesh = batch_size, members, mesh
    self._repl = sharding.replicated(mesh)

    def metrics(preds, batch, member):  # each member's own fold of a validation set
      return loss_and_metrics(preds, folds_lib.view(batch, member, folds, training=False))[1]

    if members:
      predict = jax.vmap(predict, in_axes=(0, None))
      metrics = jax.vmap(metrics, in_axes=(0, None, 0))
    self._predict = jax.jit(predict, out_shardings=self._repl)
    self._metrics = jax.jit(metrics, out_shardings=self._repl)

  def predict(self, params, examples) -> np.ndarray:
    """Predictions [N, ...] (a population's [M, N, ...]) for every example of `examples`,
    on the host."""
    out = []
    n = self._mesh.shape[sharding.DATA]
    # A small set (a validation split) is one batch of its own size, not a padded full one.
    size = min(self._batch_size, -(-examples.size // n) * n)
    spec = sharding.DATA if size % n == 0 else None
    shard = jax.sharding.NamedSharding(self._mesh, jax.sharding.PartitionSpec(spec))
    for start in range(0, examples.size, size):
      idx = np.minimum(np.arange(start, start + size), examples.size - 1)
      batch = examples.gather(idx)
      preds = np.asarray(jax.device_get(self._predict(params, put(batch, shard))))
      keep = slice(0, min(size, examples.size - start))
      out.append(preds[:, keep] if self._members else preds[keep])
    return np.concatenate(out, axis=1 if self._members else 0)

  def metrics(self, preds: np.ndarray, examples) -> dict[str, Any]:
    """The task's metrics of `preds` [N, ...] against the targets of `examples`: floats,
    or a population's [M] arrays."""
    targets = examples.targets()
    member = np.arange(len(preds), dtype=np.int32) if self._members else np.int32(0)
    metrics = jax.device_get(self._metrics(put(preds, self._repl), put(targets, self._repl),
                                           put(member, self._repl)))
    return {k: np.asarray(v) if self._members else float(v) for k, v in metrics.items()}

  def __call__(self, params, examples) -> tuple[np.ndarray, dict[str, Any]]:
    preds = self.predict(params, examples)
    return preds, self.metrics(preds, examples)
