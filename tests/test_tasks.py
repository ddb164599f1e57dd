"""Samplers: shapes, statistics, and held-out sets that never overlap training."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqjax.config import configlib, validate
from seqjax.data import tasks
from seqjax.data.tasks import base

KEY = jax.random.key(0)


def _task(name, arg=None, **overrides):
  config = configlib.load(name, arg)
  config.unlock()
  for field, value in overrides.items():
    config.task[field] = value
  return tasks.make(config.task, config.train.batch_size), config


def test_freq_online_samples():
  task, config = _task("freq", "max_freq=30")
  batches = [task.train_batch(KEY, jnp.int32(s)) for s in range(20)]
  x = np.concatenate([b["x"] for b in batches])
  f = np.concatenate([b["y"] for b in batches])[:, 0]
  assert x.shape == (20 * config.train.batch_size, 100, 1)
  assert set(np.unique(f)) <= set(range(1, 30)) and len(np.unique(f)) > 20
  # x is sin(f * linspace(o, 2pi + o)): its spectrum peaks at f cycles.
  for xi, fi in zip(x[:5, :, 0], f[:5], strict=True):
    spectrum = np.abs(np.fft.rfft(xi[:-1]))  # 99 samples cover one period of f cycles
    assert int(np.argmax(spectrum)) == int(fi)
    assert np.all(np.abs(xi) <= 1.0)
  # Fresh data every step.
  assert not np.allclose(batches[0]["x"], batches[1]["x"])


def test_freq_seed_dataset_and_held_out():
  task, config = _task("freq", "seed")
  assert task.steps_per_epoch == 3  # 90 sines, batch 32
  seen = [task.train_batch(KEY, jnp.int32(s)) for s in range(3)]
  weights = np.concatenate([b["weight"] for b in seen])
  assert weights.sum() == 90 and weights.shape == (96,)
  f = np.concatenate([b["y"][:, 0] for b in seen])[weights > 0]
  np.testing.assert_array_equal(np.bincount(f.astype(int)), [0] + [10] * 9)
  held = task.eval_batch(KEY, jax.random.key(7))
  np.testing.assert_array_equal(np.bincount(held["y"][:, 0].astype(int)), [0] + [50] * 9)
  train_x = np.concatenate([b["x"] for b in seen])[weights > 0]
  # Same integer frequencies, new offsets: no held-out sine equals a training sine.
  d = np.abs(train_x[:, None, :, 0] - held["x"][None, :, :, 0]).max(-1)
  assert d.min() > 1e-4


def test_mean_held_out_disjoint_from_training():
  task, config = _task("mean", "length=200")
  b = task.train_batch(KEY, jnp.int32(0))
  assert b["x"].shape == (80, 200, 1)
  np.testing.assert_allclose(b["y"][:, 0], b["x"][..., 0].mean(1), atol=1e-6)
  ones = lambda x: set(np.asarray(x[..., 0].sum(1)).astype(int).tolist())
  train_seqs = ones(b["x"])
  assert len(train_seqs) == 80  # the full batch is the whole training set
  held = task.eval_batch(KEY, jax.random.key(7))
  held_seqs = ones(held["x"])
  assert len(held_seqs) == 121 and not train_seqs & held_seqs
  # Step sequences: 0..0 then 1..1.
  assert np.all(np.diff(held["x"][..., 0], axis=1) >= 0)


def test_mean_seed_masks_zeros():
  task, _ = _task("mean", "seed")
  b = task.train_batch(KEY, jnp.int32(0))
  assert b["x"].shape == (1, 2000, 1)
  np.testing.assert_array_equal(b["mask"], b["x"][..., 0] != 0)


def test_echo_window_labels_and_stateful_order():
  task, config = _task("echo", "seed")
  assert task.stateful_period == 4
  batches = [task.train_batch(KEY, jnp.int32(s)) for s in range(8)]
  assert [bool(b["reset"]) for b in batches] == [True, False, False, False] * 2
  for b in batches:
    assert b["x"].shape == (5, 5, 100)
    np.testing.assert_array_equal(np.argmax(b["x"][:, -2], -1), b["y"])
  # Consecutive windows of one sequence overlap by 4 values (the seed's pandas shifts).
  seq = np.concatenate([np.argmax(b["x"], -1) for b in batches[:4]])
  np.testing.assert_array_equal(seq[1:, :-1], seq[:-1, 1:])


def test_echo_stream_labels_lag_and_chunks():
  task, config = _task("echo", "window=1,lag=5")
  period = task.stateful_period
  assert period == 4 and task.head == "per_step"
  chunks = [task.train_batch(KEY, jnp.int32(s)) for s in range(period)]
  s = np.concatenate([np.argmax(c["x"], -1) for c in chunks], axis=1)  # [B, 100]
  y = np.concatenate([c["y"] for c in chunks], axis=1)
  w = np.concatenate([c["weight"] for c in chunks], axis=1)
  np.testing.assert_array_equal(y[:, 5:], s[:, :-5])
  assert np.all(w[:, :5] == 0) and np.all(w[:, 5:] == 1)
  counts = np.bincount(s.ravel(), minlength=100)
  assert counts.min() > 0.5 * counts.mean()  # roughly uniform classes


def test_sine_next_step_targets():
  task, config = _task("sine")
  b = task.train_batch(KEY, jnp.int32(3))
  free_run = config.task.free_run  # targets go on past the inputs for the free-running loss
  assert b["x"].shape == (64, 50, 1) and b["y"].shape == (64, 50 + free_run, 1)
  np.testing.assert_allclose(b["x"][:, 1:], b["y"][:, :49], atol=1e-6)
  dx = np.diff(np.arcsin(np.clip(b["x"][..., 0], -1, 1)), axis=1)
  assert np.all(np.abs(dx) <= np.pi / 2 / 50 + 1e-3)  # each step advances the phase by width/T


def test_epoch_batch_covers_each_example_once_per_epoch():
  data = {"i": jnp.arange(10), "weight": jnp.ones(10)}
  for epoch in range(2):
    batches = [base.epoch_batch(data, KEY, jnp.int32(epoch * 3 + s), 4) for s in range(3)]
    idx = np.concatenate([b["i"] for b in batches])
    w = np.concatenate([b["weight"] for b in batches])
    assert sorted(idx[w > 0].tolist()) == list(range(10))
    assert w.sum() == 10


def test_tasks_are_the_modules_of_the_package():
  names = tasks.names()
  assert {"echo", "freq", "mean", "sine"} <= set(names) and "base" not in names
  cfg = ml_collections.ConfigDict({"name": "base"})
  with pytest.raises(validate.ConfigError, match="allowed: " + ", ".join(names)):
    tasks.make(cfg, 4)
