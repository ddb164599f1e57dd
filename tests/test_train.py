"""Tiers 2 and 3: one jitted step changes every parameter; each config end to end."""

import json
import os

import jax
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)

import seqjax
from seqjax import report
from seqjax.config import configlib
from seqjax.data import tasks
from seqjax.model import sequence
from seqjax.runtime import writers
from seqjax.train import checkpoint, planning, programs, trainer


def fresh(config):
  """(task, model, fresh state for 10 steps, data key, dropout key) of a config, one device."""
  data_key, init_key, dropout_key, _ = jax.random.split(jax.random.key(config.seed), 4)
  task = tasks.make(config.task, config.train.batch_size)
  model = sequence.from_config(config.model, task.out_features, task.head)
  state = programs.init_state(task, model, planning.optimizer(config.train, 10), data_key, init_key,
                               config.train.batch_size)
  return task, model, state, data_key, dropout_key


# The default selection steps freq, and echo and sine as their seeds run them (stateful and
# free-running); the other cases are slow.
@pytest.mark.parametrize("name,arg", [
    pytest.param(name, "quick", marks=[] if name == "freq" else pytest.mark.slow)
    for name in tasks.generated()] + [
    pytest.param("echo", "quick,window=1,lag=5", marks=pytest.mark.slow), ("echo", "quick,seed"),
    ("sine", "quick,seed"),
])
def test_one_jitted_step_changes_every_parameter(name, arg):
  config = configlib.load(name, arg)
  config.unlock()
  config.train.schedule = "constant"  # warmup starts at learning rate 0
  task, model, state, data_key, dropout_key = fresh(config)
  before = jax.tree.map(np.array, state.params)
  step = jax.jit(programs.make_train_step(model, task))
  state, metrics = step(state, data_key, dropout_key)
  assert int(state.step) == 1
  assert np.isfinite(float(metrics["loss"]))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), before, state.params)
  unchanged = [jax.tree_util.keystr(p) for p, c in jax.tree_util.tree_leaves_with_path(changed)
               if not c]
  assert not unchanged, f"parameters not updated: {unchanged}"


@pytest.mark.parametrize("name,arg", [("sine", "quick,seed"), ("echo", "quick,seed")])
def test_train_loop_runs_the_same_steps_as_single_steps(name, arg):
  """One call of the device-side loop = that many single steps (finite data, stateful carry)."""
  config = configlib.load(name, arg)
  task, model, state, data_key, dropout_key = fresh(config)
  step = jax.jit(programs.make_train_step(model, task))
  single, sums = state, None
  for _ in range(5):
    single, metrics = step(single, data_key, dropout_key)
    sums = metrics if sums is None else jax.tree.map(np.add, sums, metrics)
  loop = jax.jit(programs.make_train_loop(model, task))
  looped, totals = loop(state, data_key, dropout_key, 3)  # a traced count: one program for both
  looped, more = loop(looped, data_key, dropout_key, 2)
  assert int(totals["steps"]) == 3 and int(more["steps"]) == 2 and bool(more["finite"])
  assert int(looped.step) == 5
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.tree.leaves(single), jax.tree.leaves(looped))
  for name_ in sums:
    np.testing.assert_allclose(totals["sums"][name_] + more["sums"][name_], sums[name_],
                               rtol=1e-5)


def test_train_loop_stops_at_the_first_non_finite_step():
  config = configlib.load("freq", "quick")
  config.unlock()
  config.train.learning_rate = 1e12
  config.train.schedule = "constant"
  task, model, state, data_key, dropout_key = fresh(config)
  state, totals = jax.jit(programs.make_train_loop(model, task))(state, data_key, dropout_key, 50)
  assert not bool(totals["finite"])
  assert 1 <= int(totals["steps"]) < 50 and int(state.step) == int(totals["steps"])


def test_plan_is_abstract_and_compiles_the_loop_initialize_runs():
  """`plan` gives the state's types and shardings without computing it; a train loop
  compiled for them runs on the state `initialize` computes."""
  run = planning.plan(configlib.load("echo", "quick,window=1,lag=5"))  # a sharded carry too
  assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(run.state))
  sums = programs.zero_sums(run)
  loop = programs.compile_ahead(programs.jit_train_loop(run), run.state, run.data_key,
                                run.dropout_key, np.int32(1), sums)
  done = planning.initialize(run)
  types = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype, a.sharding), tree)
  assert types(done.state) == types(run.state)
  state, totals = loop(done.state, done.data_key, done.dropout_key, np.int32(2), sums)
  assert int(state.step) == 2 and bool(totals["finite"])


@pytest.mark.parametrize("name,arg", [
    # freq, and sine's rollout figures; echo runs end to end in test_main.
    pytest.param(name, "quick", marks=[] if name in ("freq", "sine") else pytest.mark.slow)
    for name in tasks.generated()] + [
    pytest.param("echo", "quick,window=1,lag=5", marks=pytest.mark.slow)])
def test_train_and_evaluate_end_to_end(name, arg, tmp_path):
  config = configlib.load(name, arg)
  workdir = str(tmp_path / "wd")
  results = trainer.train_and_evaluate(config, workdir)
  files = set(os.listdir(workdir))
  assert {"config.json", "results.json", "metrics.jsonl", "loss.png", "checkpoints",
          "tensorboard"} <= files
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["test"] == results["test"]
  assert saved["test_set"].startswith("the task's own examples, never trained on")
  assert saved["steps"] == config.train.steps
  assert np.isfinite(saved["test"][saved["metric"]])
  records = writers.read_metrics(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [10, 20]
  assert [r["step"] for r in records if r["split"] == "validation"] == [10, 20]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                if s.isdigit()) == [10, 20]
  plot = {"freq": "predictions.png", "mean": "predictions.png", "sine": "teacher_forced.png"}
  if name in plot:
    assert plot[name] in files
  table = report.rows(str(tmp_path))
  assert len(table) == 3 and table[2].startswith(f"| wd | {name} | {saved['metric']} ")
  if name == "sine":  # free-running evaluation after a 50-step warm-up
    assert "rollout.png" in files
    assert {"rmse@10", "rmse@50", "rmse@100", "rmse@200"} <= set(saved["rollout"])
    assert saved["rollout"]["warmup"] == 50


def test_resume_continues_exactly(tmp_path, monkeypatch, freq_quick):
  """Killed after its step-10 checkpoint and rerun: ends where an uninterrupted run does."""
  config = configlib.load("freq", "quick")
  full = freq_quick[1]

  real_save = checkpoint.Checkpointer.save

  def save_then_die(self, step, state):
    real_save(self, step, state)
    if step == 10:
      raise KeyboardInterrupt("simulated kill after the step-10 checkpoint")

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, str(tmp_path / "split"))
  monkeypatch.undo()
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "split"))
  assert resumed["test"] == full["test"]


def test_periodic_actions_fire_on_their_own_setting(tmp_path):
  config = configlib.load("sine", "quick")
  config.unlock()
  config.train.steps = 12
  config.train.log_every = 4
  config.train.eval_every = 6
  config.train.checkpoint_every = 5
  workdir = str(tmp_path / "wd")
  trainer.train_and_evaluate(config, workdir)
  records = writers.read_metrics(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [4, 8, 12]
  assert [r["step"] for r in records if r["split"] == "validation"] == [6, 12]
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [5, 10, 12]


def test_nan_stops_with_step_range_and_keeps_work(tmp_path):
  """A huge learning rate after 20 good steps: stop naming the step; keep checkpoints, metrics."""
  config = configlib.load("freq", "quick")
  workdir = str(tmp_path / "wd")
  trainer.train_and_evaluate(config, workdir)
  good = _restore_raw(workdir, 20)
  config.unlock()
  config.train.steps = 40
  config.train.learning_rate = 1e12  # same optimizer structure, so the checkpoint still fits
  config.allow_config_change = True
  with pytest.raises(FloatingPointError, match=r"NaN/Inf at step 2\d .*last checkpoint: step 20"):
    trainer.train_and_evaluate(config, workdir)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [10, 20]
  after = _restore_raw(workdir, 20)
  jax.tree.map(np.testing.assert_array_equal, good, after)
  records = writers.read_metrics(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [10, 20]


def _restore_raw(workdir, step):
  import orbax.checkpoint as ocp
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "default")
  return ocp.StandardCheckpointer().restore(path)


@pytest.mark.slow
def test_a_bidirectional_model_with_dropouts_trains_and_predicts_from_its_config(tmp_path):
  config = configlib.load("freq", "quick")
  config.unlock()
  config.model.update(bidirectional=True, merge="sum", num_layers=2, layer_dropout=0.1,
                      input_dropout=0.1, recurrent_dropout=0.1)
  workdir = str(tmp_path / "wd")
  results = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(results["test"][results["metric"]])
  run = seqjax.load(workdir)
  assert {"layer0_reverse", "layer1_reverse"} <= set(run.params["lstm"])
  x = np.sin(np.linspace(0, 20, 4 * 100)).reshape(4, 100, 1).astype(np.float32)
  assert np.all(np.isfinite(run.predict(x)))


def test_a_run_saved_before_a_model_field_existed_loads_with_its_default(tmp_path):
  config = configlib.load("freq", "quick")
  workdir = tmp_path / "wd"
  trainer.train_and_evaluate(config, str(workdir))
  x = np.sin(np.linspace(0, 20, 200)).reshape(2, 100, 1).astype(np.float32)
  expected = seqjax.load(str(workdir)).predict(x)
  saved = json.loads((workdir / "config.json").read_text())
  for field in ("bidirectional", "merge", "layer_dropout", "input_dropout", "recurrent_dropout"):
    del saved["model"][field]
  (workdir / "config.json").write_text(json.dumps(saved))
  run = seqjax.load(str(workdir))
  assert run.model.bidirectional is False
  np.testing.assert_array_equal(run.predict(x), expected)
