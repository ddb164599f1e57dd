"""Cross-validation folds: each member of a population trains outside its own fold of
the labelled sequences and validates inside it."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from sample_files import write_shapes_csv

from seqjax.config import configlib
from seqjax.data import folds
from seqjax.train import driver, planning, programs, workdirs


def test_folds_hold_every_class_in_its_share():
  rng = np.random.default_rng(0)
  for sizes, k in (((10, 10, 10, 10), 5), ((10, 10, 10, 10), 4), ((20, 20), 2), ((7, 3, 12), 3)):
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    fold = folds.assign(len(labels), k, labels)
    counts = np.array([[np.sum((fold == f) & (labels == c)) for c in range(len(sizes))]
                       for f in range(k)])  # [fold, class]
    assert (counts.max(0) - counts.min(0) <= 1).all(), counts  # each class spread evenly
    assert counts.sum(1).max() - counts.sum(1).min() <= 1  # and the folds' sizes


def test_a_member_trains_outside_its_fold_and_validates_inside_it():
  assign = folds.assign(7, 3)
  np.testing.assert_array_equal(assign, [0, 1, 2, 0, 1, 2, 0])
  batch = {"x": np.zeros((7, 4, 1)), "fold": assign,
           "weight": np.arange(1.0, 8.0)[:, None] * np.ones((7, 4))}  # per-step weights
  for member in range(5):  # members 3 and 4 take folds 0 and 1 again
    own = assign == member % 3
    trains = folds.view(batch, member, 3, training=True)["weight"]
    validates = folds.view(batch, member, 3, training=False)["weight"]
    np.testing.assert_array_equal(trains, batch["weight"] * ~own[:, None])
    np.testing.assert_array_equal(validates, batch["weight"] * own[:, None])
  test_split = {"x": batch["x"], "weight": batch["weight"]}  # no folds: as it is
  assert folds.view(test_split, 1, 3, training=False) is test_split
  assert folds.view(batch, 1, 0, training=True) is batch


def _population(tmp_path, **overrides):
  path, _ = write_shapes_csv(tmp_path / "shapes.csv", n=60)
  config = configlib.load("data", "quick")
  config.unlock()
  config.task.train = str(path)
  config.population.seeds, config.task.folds = 3, 3
  return configlib.override(config, overrides)


@pytest.mark.slow
def test_each_member_trains_on_the_others_folds_and_is_judged_on_its_own(tmp_path):
  """One population step equals each member's step alone on the batch with its own
  fold's weights zeroed; each member's validation figures are those of its own fold."""
  config = _population(tmp_path)
  run = planning.initialize(planning.plan(config, members=planning.population_members(config)))
  task = run.task
  assert task.folds == 3 and task.validation is task.train_examples
  assert task.train_examples.size == 48  # every labelled sequence: 60 less the test's 12
  batch = task.train_examples.gather(np.arange(32))
  assert set(batch["fold"].tolist()) == {0, 1, 2}
  loop = jax.jit(programs.make_population_train_loop(run.model, task, run.mesh))
  together, _ = loop(run.state, *run.loop_args(), 1, None, jax.tree.map(lambda a: a[None], batch))
  alone_step = jax.jit(programs.make_train_step(run.model, dataclasses.replace(task, folds=0),
                                                run.mesh))
  for m in range(3):
    member = jax.tree.map(lambda a, m=m: a[m], run.state)
    masked = {**batch, "weight": batch["weight"] * (batch["fold"] != m)}
    alone, _ = alone_step(member, run.data_key[m], run.dropout_key[m], run.lr_scale[m], masked)
    # The same arithmetic, vmapped or not: float32 roundings apart.
    jax.tree.map(lambda a, b, m=m: np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-6),
                 together.params, alone.params)
  # Validation: each member's figures are its own fold's alone.
  evaluate = driver.evaluator(run, 64)
  preds, metrics = evaluate(together.params, task.validation)
  fold = task.validation.arrays["fold"]
  for m in range(3):
    own = fold == m
    accuracy = (preds[m][own].argmax(-1) == task.validation.arrays["y"][own]).mean()
    np.testing.assert_allclose(metrics["accuracy"][m], accuracy, rtol=1e-6)


def test_one_model_validates_on_the_split_whatever_task_folds_says(tmp_path):
  run = planning.setup(_population(tmp_path))  # members=None: one model
  assert run.task.folds == 0 and run.config.task.folds == 0
  assert "fold" not in run.task.train_examples.arrays
  assert run.task.validation is not run.task.train_examples


def test_a_run_written_before_folds_existed_resumes():
  """Its config.json has no task.folds; folds=0 computes what it computed."""
  config = configlib.load("data")
  before = json.loads(config.to_json_best_effort())
  del before["task"]["folds"]
  assert workdirs.config_changes(before, config) == []
  changed = configlib.override(config, {"task.folds": 3})
  assert workdirs.config_changes(before, changed) == ["task.folds: '<absent>' -> 3"]
