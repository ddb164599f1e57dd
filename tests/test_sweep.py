"""Grids vmapped over array-valued hyperparameters equal the runs trained alone."""

import json
import os
import signal
import subprocess
import sys
import time

import cli_process
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from seqjax import report, sweep
from seqjax.config import configlib, validate
from seqjax.train import checkpoint, planning, programs, trainer

ROOT = os.path.join(os.path.dirname(__file__), "..")

RUNS = [
    {"seed": 0, "model.kernel_gain": 0.1},
    {"seed": 1, "model.kernel_gain": 1.0, "model.recurrent_gain": 0.5},
    {"seed": 2, "train.learning_rate": 3e-3, "model.forget_bias": 0.0},
]


def _params(workdir, step):
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "default")
  return ocp.StandardCheckpointer().restore(path)["params"]


@pytest.mark.slow
def test_grid_equals_models_trained_alone(tmp_path):
  config = configlib.load("mean", "quick,seed")  # finite data per seed, Masking, relu output
  config.unlock()
  config.model.kernel_init = "orthogonal"
  results = sweep.train_grid(config, RUNS, str(tmp_path / "grid"))
  grid_params = _params(tmp_path / "grid", config.train.steps)
  for i, run in enumerate(RUNS):
    alone_dir = str(tmp_path / f"alone{i}")
    alone = trainer.train_and_evaluate(configlib.override(config, run), alone_dir)
    np.testing.assert_allclose(results[i]["test"]["mae"], alone["test"]["mae"],
                               rtol=1e-4)
    jax.tree.map(lambda g, a: np.testing.assert_allclose(g[i], a, rtol=1e-4, atol=1e-6),
                 grid_params, _params(alone_dir, config.train.steps))


def test_config_sweep_groups_structural_settings():
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "mean.py")
  runs = sweep.load_sweep(path, "gain")
  assert len(runs) == 2 * 6 * 8
  groups = sweep.group_runs(runs)
  assert [g[0]["task.length"] for g in groups] == [200, 2000]
  assert all(len(members) == 48 for _, members in groups)


def test_grid_refuses_structural_fields():
  config = configlib.load("mean", "quick")
  try:
    planning.plan(config, members=[{"model.hidden": 8}])
  except validate.ConfigError as e:
    assert "model.hidden" in str(e)
  else:
    raise AssertionError("expected a ConfigError")


@pytest.mark.slow
def test_throughput_reports_both_rates():
  config = configlib.load("mean", "quick,seed")
  out = sweep.throughput(config, [{"seed": s} for s in range(3)], steps=2)
  assert out["models"] == 3
  assert out["grid_model_steps_per_s"] > 0 and out["sequential_model_steps_per_s"] > 0
  np.testing.assert_allclose(out["speedup"], out["grid_model_steps_per_s"]
                             / out["sequential_model_steps_per_s"])


SMALL_SWEEP = '''
from seqjax.config import configlib


def get_config(arg=None):
  config = configlib.load("mean", "quick,seed")
  config.train.steps = 200
  config.train.log_every = 10
  config.train.checkpoint_every = 10
  config.train.eval_every = 50
  return config


def sweep(add, name):
  for seed in range(2):
    for gain in (0.1, 1.0):
      add(**{"seed": seed, "model.kernel_gain": gain})
'''


def _sweep_cmd(config_file, workdir):
  return [sys.executable, "-m", "seqjax.sweep", f"--config={config_file}", "--sweep=small",
          f"--workdir={workdir}", "--converged=0.45"]


@pytest.mark.slow
def test_sweep_resumes_after_kill_9_bit_identical(tmp_path):
  config_file = tmp_path / "small.py"
  config_file.write_text(SMALL_SWEEP)
  full = tmp_path / "full"
  done = cli_process.run(_sweep_cmd(config_file, full), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_sweep_cmd(config_file, killed), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  checkpoint = killed / "all" / "checkpoints" / "60"
  t0 = time.time()
  while not checkpoint.is_dir():
    assert proc.poll() is None, proc.communicate()[1]
    assert time.time() - t0 < 120
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert not (killed / "all" / "results.json").exists()
  rerun = cli_process.run(_sweep_cmd(config_file, killed), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  assert "resumed from the checkpoint at step 60" in rerun.stdout
  for name in ("all/results.json", "ablation.md"):
    assert (full / name).read_text() == (killed / name).read_text()
  results = json.loads((full / "all" / "results.json").read_text())
  assert [h["step"] for h in results["history"]] == [50, 100, 150, 200]
  assert "population of 4" in "\n".join(report.rows(str(tmp_path)))


@pytest.mark.slow
def test_grid_masks_a_diverged_model_and_the_others_go_on():
  config = configlib.load("mean", "quick,seed")
  run = planning.initialize(planning.plan(config, members=[{"seed": 0}, {"seed": 1}]))
  loop = jax.jit(programs.make_population_train_loop(run.model, run.task))
  healthy, _ = loop(run.state, run.data_key, run.dropout_key, run.lr_scale, 5)
  # An infinite learning rate for model 1: step 1 makes its parameters Inf (its
  # param_norm metric), so it keeps the state from before step 1.
  lr_scale = np.array([1.0, np.inf], np.float32)
  state, totals = loop(run.state, run.data_key, run.dropout_key, lr_scale, 5)
  assert int(totals["steps"]) == 5
  np.testing.assert_array_equal(np.asarray(totals["alive"]), [True, False])
  np.testing.assert_array_equal(np.asarray(state.diverged_at), [-1, 1])
  one = lambda tree, i: jax.tree.map(lambda a: np.asarray(a)[i], tree)
  jax.tree.map(np.testing.assert_array_equal, one(state.params, 0), one(healthy.params, 0))
  jax.tree.map(np.testing.assert_array_equal, one(state.params, 1), one(run.state.params, 1))
  assert np.isfinite(np.asarray(totals["sums"]["loss"])).all()


def test_grid_scales_gains_like_the_model_built_with_them():
  config = configlib.load("mean", "quick,seed")
  runs = [{"model.kernel_gain": 0.3, "model.recurrent_gain": 2.0, "model.forget_bias": 0.5}]
  grid = planning.initialize(planning.plan(config, members=runs))
  alone = planning.setup(configlib.override(config, runs[0]))
  jax.tree.map(lambda g, a: np.testing.assert_allclose(g[0], a, rtol=1e-6, atol=1e-7),
               grid.state.params, alone.state.params)


def test_a_grid_checkpoint_without_divergence_marks_restores(tmp_path):
  """Grid checkpoints written before grids saved `diverged_at` still resume."""
  config = configlib.load("mean", "quick,seed")
  run = planning.initialize(planning.plan(config, members=[{"seed": 0}, {"seed": 1}]))
  older = checkpoint.Checkpointer(tmp_path / "checkpoints")
  older.save(3, run.state.replace(step=run.state.step + 3, diverged_at=None))
  older.close()
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  restored = ckpt.restore_latest(run.state)
  ckpt.close()
  np.testing.assert_array_equal(np.asarray(restored.step), [3, 3])
  np.testing.assert_array_equal(np.asarray(restored.diverged_at), [-1, -1])


def test_a_sweep_checks_every_group_before_the_first_trains(tmp_path, monkeypatch):
  """A bad group found only after the groups before it trained would lose their hours."""
  path = tmp_path / "cfg.py"
  path.write_text(
      "from seqjax.config import configlib\n"
      "def get_config(arg=None):\n"
      "  return configlib.load('mean', 'quick')\n"
      "def sweep(add, name):\n"
      "  add(seed=0)\n"
      "  add(seed=0, **{'model.layer_dropout': 0.5})\n")  # one layer: refused
  config = configlib.load("mean", "quick")
  monkeypatch.setattr(sweep, "train_grid", lambda *a, **k: pytest.fail("trained a group"))
  with pytest.raises(validate.ConfigError, match="model.layer_dropout"):
    sweep.run_sweep(config, str(path), "any", str(tmp_path / "wd"), None)


def test_groups_are_named_by_the_fields_that_differ_even_when_the_first_sets_none():
  """A first group at the config's defaults and a second that changes a size get two
  folders, not one ("all") that the second would refuse as a different config."""
  config = configlib.load("mean", "quick")
  labels = sweep.group_labels(config, [{}, {"model.hidden": 8}, {"model.hidden": 8,
                                                                  "task.length": 30}])
  hidden, length = config.model.hidden, config.task.length
  assert labels == [f"model.hidden={hidden},task.length={length}",
                    f"model.hidden=8,task.length={length}", "model.hidden=8,task.length=30"]
  assert sweep.group_labels(config, [{"model.hidden": 8}]) == ["all"]
  # A legend names each field by its last name.
  assert sweep.group_labels(config, [{}, {"model.hidden": 8, "task.length": 30}], short=True) == [
      f"hidden={hidden} length={length}", "hidden=8 length=30"]



def test_the_gain_table_counts_members_without_a_gain_at_the_configs():
  results = [{"model.kernel_gain": 0.5, "test": {"mae": 0.1}, "steps_to_converge": 10},
             {"test": {"mae": 0.3}, "steps_to_converge": None}]
  rows = sweep.gain_table(results, "mae", "g", default=0.01)
  assert [row.split(" | ")[1] for row in rows] == ["0.01", "0.5"]
  assert "| 0/1 |" in rows[0] and "| 1/1 |" in rows[1]
