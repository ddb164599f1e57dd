"""Grids vmapped over array-valued hyperparameters equal the runs trained alone."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train import load_config

from seqjax import sweep, train, validate

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
  config = load_config("mean", "quick,seed")  # finite data per seed, Masking, relu output
  config.unlock()
  config.model.kernel_init = "orthogonal"
  results = sweep.train_grid(config, RUNS, str(tmp_path / "grid"))
  grid_params = _params(tmp_path / "grid", config.train.steps)
  for i, run in enumerate(RUNS):
    alone_dir = str(tmp_path / f"alone{i}")
    alone = train.train_and_evaluate(sweep.override(config, run), alone_dir)
    np.testing.assert_allclose(results[i]["held_out"]["mae"], alone["held_out"]["mae"],
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
  config = load_config("mean", "quick")
  try:
    sweep.Grid(config, [{"model.hidden": 8}])
  except validate.ConfigError as e:
    assert "model.hidden" in str(e)
  else:
    raise AssertionError("expected a ConfigError")


def test_throughput_reports_both_rates():
  config = load_config("mean", "quick,seed")
  out = sweep.throughput(config, [{"seed": s} for s in range(3)], steps=2)
  assert out["models"] == 3
  assert out["grid_model_steps_per_s"] > 0 and out["sequential_model_steps_per_s"] > 0
  np.testing.assert_allclose(out["speedup"], out["grid_model_steps_per_s"]
                             / out["sequential_model_steps_per_s"])
