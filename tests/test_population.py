"""A population: M members trained by the one trainer as one program, each equal to the
same config trained alone, with its own early stopping, best parameters and NaN."""

import json
import os
import signal
import subprocess
import sys
import time

import cli_process
import jax
import numpy as np
import pytest

import seqjax
from seqjax.config import configlib, validate
from seqjax.runtime import writers
from seqjax.train import checkpoint, planning, programs, trainer

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _config(**overrides):
  return configlib.override(configlib.load("mean", "quick"), overrides)


def _close(a, b):  # one program for M members against M programs: float32 roundings apart
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_population_members_come_from_seeds_and_learning_rates():
  config = _config(**{"seed": 5, "population.seeds": 2,
                      "population.learning_rates": (1e-3, 3e-3)})
  assert planning.population_members(config) == [
      {"seed": 5, "train.learning_rate": 1e-3}, {"seed": 6, "train.learning_rate": 1e-3},
      {"seed": 5, "train.learning_rate": 3e-3}, {"seed": 6, "train.learning_rate": 3e-3}]
  assert planning.population_members(_config()) is None  # one model: the config itself


@pytest.mark.slow
def test_each_member_equals_its_seed_trained_alone_with_early_stopping(tmp_path):
  """Per member: early stopping, best parameters (keep_best) and the selected answer."""
  stop = {"train.steps": 60, "train.eval_every": 5, "train.early_stopping": 2,
          "train.keep_best": True, "train.learning_rate": 0.03}
  config = _config(**stop, **{"population.seeds": 3, "population.select": "best"})
  results = trainer.train_and_evaluate(config, str(tmp_path / "pop"))
  assert results["population"] == {"members": 3, "select": "best",
                                   "best": results["population"]["best"]}
  for i, member in enumerate(results["members"]):
    alone = trainer.train_and_evaluate(_config(**stop, seed=i), str(tmp_path / f"alone{i}"))
    _close(member["test"]["mae"], alone["test"]["mae"])
    assert member["params_step"] == alone["params_step"]
    assert member["stopped_at"] == (alone["steps"] if alone["steps"] < 60 else None)
  best = results["population"]["best"]
  assert results["test"] == results["members"][best]["test"]
  validation = [h["mae"] for h in results["history"]]
  assert any(None in v or len(set(v)) > 1 for v in validation)  # the members differ
  assert any(m["stopped_at"] for m in results["members"])  # someone stopped early
  (tmp_path / "pop" / "results.json").unlink()  # a rerun evaluates its last step again
  assert trainer.train_and_evaluate(config, str(tmp_path / "pop")) == results
  run = seqjax.load(tmp_path / "pop")
  assert run.member == best
  x = np.random.default_rng(0).random((3, 200)).astype(np.float32)
  alone = seqjax.load(tmp_path / f"alone{best}")
  _close(run.predict(x), alone.predict(x))


def test_early_stopping_steps_stop_each_member_that_many_steps_after_its_best(tmp_path,
                                                                              capsys):
  """A cap on the patience in steps: each member stops at its first evaluation that many
  steps past its best, and until then the evaluations are the uncapped run's."""
  stop = {"train.steps": 80, "train.eval_every": 5, "train.early_stopping": 100,
          "train.keep_best": True, "train.learning_rate": 0.03, "population.seeds": 2}
  capped = trainer.train_and_evaluate(
      _config(**stop, **{"train.early_stopping_steps": 10}), str(tmp_path / "capped"))
  assert "no better validation figure in 100 evaluations or 10 steps" in capsys.readouterr().out
  free = trainer.train_and_evaluate(_config(**stop), str(tmp_path / "free"))
  assert all(m["stopped_at"] is None for m in free["members"])  # 100 evaluations: never
  for member in capped["members"]:
    assert member["stopped_at"] == member["params_step"] + 10
  assert capped["steps"] == max(m["stopped_at"] for m in capped["members"]) < 80
  first = min(m["stopped_at"] for m in capped["members"])  # then it trains no further
  records = lambda run: [  # noqa: E731
      {k: v for k, v in r.items() if k != "time"} for r in writers.read_metrics(str(tmp_path / run))
      if r["split"] == "validation" and r["step"] <= first]
  assert records("capped") == records("free")


def test_members_one_after_another_train_as_side_by_side(tmp_path, monkeypatch):
  """`population.loop="map"` runs the members' steps one after another (`lax.map`) in
  the same program: the same members as side by side (`vmap`), float32 roundings apart."""
  config = _config(**{"population.seeds": 2, "train.steps": 40})
  side = trainer.train_and_evaluate(config, str(tmp_path / "vmap"))
  loops, over_members = [], programs.over_members
  monkeypatch.setattr(programs, "over_members",
                      lambda fn, axes, loop="vmap": (loops.append(loop),
                                                     over_members(fn, axes, loop))[1])
  one = trainer.train_and_evaluate(configlib.override(config, {"population.loop": "map"}),
                                   str(tmp_path / "map"))
  assert loops and set(loops) == {"map"}  # the run's train loop was made with it
  for a, b in zip(side["members"], one["members"], strict=True):
    _close(a["test"]["mae"], b["test"]["mae"])
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
  auto = configlib.override(config, {"population.loop": "auto"})
  want = "map" if jax.devices()[0].platform == "cpu" else "vmap"
  assert programs.member_loop(auto, mesh) == want
  assert programs.member_loop(config, mesh) == "vmap"


def test_best_parameters_are_written_with_checkpoints_not_at_each_improvement(tmp_path,
                                                                              monkeypatch):
  """An orbax save per improvement cost more than training a small file: the kept
  parameters reach the store with each checkpoint and at the end, once each at most."""
  saves = []
  save = checkpoint.ParamsStore.save
  monkeypatch.setattr(checkpoint.ParamsStore, "save",
                      lambda self, step, params: (saves.append(step), save(self, step, params)))
  stop = {"train.steps": 40, "train.eval_every": 2, "train.checkpoint_every": 20,
          "train.keep_best": True, "train.learning_rate": 0.03, "population.seeds": 2}
  results = trainer.train_and_evaluate(_config(**stop), str(tmp_path))
  best = [m["params_step"] for m in results["members"]]
  # Checkpoints at steps 20 and 40, then the evaluation at the end: 3 saves at most, of
  # the 20 evaluations' improvements.
  assert len(saves) <= 3 and saves[-1] == max(best)
  assert len({r["step"] for r in writers.read_metrics(str(tmp_path))
              if r["split"] == "validation"}) == 20
  assert checkpoint.ParamsStore(tmp_path / checkpoint.PARAMS_DIR).latest_step() == max(best)


@pytest.mark.slow
def test_a_diverged_member_is_reported_and_the_others_train_on(tmp_path):
  config = _config(**{"population.learning_rates": (1e-3, 1e30, 2e-3),
                      "population.select": "ensemble"})
  results = trainer.train_and_evaluate(config, str(tmp_path))
  good, bad, _ = results["members"]
  assert good["test"] is not None and good["diverged_at"] is None
  assert bad["test"] is None and bad["diverged_at"] is not None
  json.loads((tmp_path / "results.json").read_text(),
             parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
  run = seqjax.load(tmp_path)  # the ensemble of the two members that trained
  assert run.ensemble and jax.tree.leaves(run.params)[0].shape[0] == 2
  with pytest.raises(FloatingPointError, match="every member"):
    trainer.train_and_evaluate(_config(**{"population.learning_rates": (1e30, 2e30)}),
                               str(tmp_path / "all"))


@pytest.mark.slow
def test_the_ensemble_averages_class_probabilities(tmp_path):
  config = configlib.override(configlib.load("echo", "quick"), {
      "population.seeds": 2, "population.select": "ensemble"})
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert set(results["test"]) == {"accuracy", "xent"}
  run = seqjax.load(tmp_path)
  assert run.ensemble and run.member is None
  x = np.random.default_rng(0).random((4, 5, 100)).astype(np.float32)
  members = [seqjax.load(tmp_path, member=i) for i in (0, 1)]
  softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
  probs = np.mean([softmax(m.predict(x)) for m in members], 0)  # echo predicts logits
  _close(softmax(run.predict(x)), probs)
  with pytest.raises(validate.ConfigError, match="allowed: 0 to 1"):
    seqjax.load(tmp_path, member=2)


def _cmd(workdir):
  # Each member's best parameters kept (`train.keep_best`), evaluated at each checkpoint:
  # a kill between the store's save and the checkpoint's must lose neither.
  return [sys.executable, "-m", "seqjax.main", "--config=configs/mean.py:quick",
          "--config.train.steps=200", "--config.train.checkpoint_every=10",
          "--config.train.eval_every=10", "--config.train.log_every=10",
          "--config.train.keep_best=True", "--config.population.seeds=3",
          f"--workdir={workdir}"]


@pytest.mark.slow
def test_a_population_killed_three_times_resumes_to_the_same_files(tmp_path):
  full = tmp_path / "full"
  cli_process.run(_cmd(full), cwd=ROOT, check=True, capture_output=True, timeout=300)
  killed = tmp_path / "killed"
  # After checkpoints 40 and 120, and while 160 is being written (its orbax tmp folder seen;
  # a write that finished first is killed just after).
  for at in (40, 120, 160):
    proc = subprocess.Popen(_cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    checkpoints = killed / "checkpoints"
    while not (checkpoints / str(at)).is_dir() and not (
        at == 160 and checkpoints.is_dir()
        and any(p.name.startswith(f"{at}.orbax-checkpoint-tmp") for p in checkpoints.iterdir())):
      assert proc.poll() is None and time.time() - t0 < 120
      time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  done = cli_process.run(_cmd(killed), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "resumed from the checkpoint" in done.stdout
  assert (full / "results.json").read_text() == (killed / "results.json").read_text()
  lines = lambda d: [{k: v for k, v in json.loads(line).items() if k != "time"}  # noqa: E731
                     for line in (d / "metrics.jsonl").read_text().splitlines()]
  assert lines(full) == lines(killed)
  for i in range(3):
    jax.tree.map(np.testing.assert_array_equal, seqjax.load(full, member=i).params,
                 seqjax.load(killed, member=i).params)


def test_the_best_member_breaks_accuracy_ties_on_the_cross_entropy():
  from types import SimpleNamespace

  from seqjax.train import population
  mon = SimpleNamespace(metric="accuracy", higher_is_better=True, keeps_best=False,
                        best_metrics=[None] * 4)
  validation = {"accuracy": np.array([1.0, 1.0, 0.5, 1.0]),
                "xent": np.array([0.3, 0.1, 0.05, 0.2])}
  alive = np.array([True, True, True, False])
  assert population.best_member(mon, validation, alive) == 1
  mon.metric, mon.higher_is_better = "mae", False  # no tie-break for other metrics
  assert population.best_member(mon, {"mae": np.array([0.2, 0.2, 0.3, 0.1])}, alive) == 0
