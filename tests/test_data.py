"""Training on the user's own files (configs/data.py), feeding from the host, predicting."""

import json
import os
import subprocess
import sys

import cli_process
import jax
import numpy as np
import pytest
from sample_files import write_monthly_csv, write_shapes_csv

import seqjax
from seqjax.config import configlib, validate
from seqjax.data import calendar, feed, readers
from seqjax.data.tasks import data
from seqjax.model import rollout
from seqjax.train import programs, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args, cwd=ROOT):
  # Not preallocating: on a GPU, the test process and this one share the device.
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  return cli_process.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=cwd, timeout=600, env=env)


ONE_MODEL = ("--config.population.seeds=1", "--config.population.learning_rates=()",
             "--config.population.select=all")


def train_cli(workdir, config, *args):
  """A run of `config` as one model (see `data_config`), its results.json."""
  out = run("seqjax.main", f"--workdir={workdir}", config, "--config.mesh.cpu_devices=0",
            *ONE_MODEL, *args)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_labelled_csv_trains_predicts_and_beats_the_majority_class(tmp_path, labelled_csv):
  path = labelled_csv(tmp_path / "labelled.csv")
  results = train_cli(tmp_path / "run", "--config=configs/data.py", f"--config.task.train={path}",
                      "--config.train.epochs=30", "--config.train.min_steps=0")
  acc = results["test"]["accuracy"]
  assert acc >= 0.9 > results["baselines"]["majority_class"]["accuracy"] + 0.2
  assert results["params_step"] <= results["steps"]
  out = run("seqjax.predict", f"--workdir={tmp_path / 'run'}", f"--input={path}",
            f"--output={tmp_path / 'pred.csv'}")
  assert out.returncode == 0, out.stderr
  lines = (tmp_path / "pred.csv").read_text().splitlines()
  assert lines[0] == "label" and len(lines) == 301 and set(lines[1:]) <= {"0", "1"}
  loaded = seqjax.load(tmp_path / "run")
  assert loaded.evaluate(*loaded.test_split()) == results["test"]  # exactly
  x, y, lengths = loaded.test_split()
  assert np.mean(loaded.predict(x, lengths) == y) == pytest.approx(acc)


@pytest.mark.slow
def test_variable_length_multivariate_npz_regression(tmp_path, variable_npz):
  path = variable_npz(tmp_path / "seqs.npz")
  results = train_cli(tmp_path / "run", "--config=configs/data.py:regression",
                      f"--config.task.train={path}", "--config.train.epochs=40",
                      "--config.train.min_steps=0")
  assert results["test"]["mae"] < 0.6 * results["baselines"]["train_mean"]["mae"]
  loaded = seqjax.load(tmp_path / "run")
  assert loaded.info["masked"] and loaded.info["in_features"] == 3
  assert loaded.evaluate(*loaded.test_split()) == results["test"]
  with np.load(path) as f:
    np.save(tmp_path / "x.npy", f["x"][:7])
  out = run("seqjax.predict", f"--workdir={tmp_path / 'run'}", f"--input={tmp_path / 'x.npy'}",
            f"--output={tmp_path / 'pred.npy'}")
  assert out.returncode == 0, out.stderr
  assert np.load(tmp_path / "pred.npy").shape == (7, 2)
  np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 2), np.float32))
  out = run("seqjax.predict", f"--workdir={tmp_path / 'run'}",
            f"--input={tmp_path / 'wrong.npy'}", f"--output={tmp_path / 'p2.npy'}")
  assert out.returncode == 2 and "2 features a step; the run was trained on 3" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_seasonal_series_forecast_12_steps_beats_seasonal_naive(tmp_path, seasonal_csv):
  path = seasonal_csv(tmp_path / "series.csv")
  results = train_cli(tmp_path / "run", "--config=configs/data.py:forecast",
                      f"--config.task.train={path}", "--config.task.time_column=hour",
                      "--config.task.horizon=12", "--config.task.season=24")
  held, naive = results["test"], results["baselines"]["seasonal_naive"]
  assert held["mae@12"] < 0.85 * naive["mae@12"] and held["mae"] < 0.85 * naive["mae"]
  assert results["baselines"]["persistence"]["mae"] > naive["mae"]
  from seqjax import report
  assert "(beat seasonal_naive: mae " in report.rows(str(tmp_path))[2]
  loaded = seqjax.load(tmp_path / "run")
  windows, truth = loaded.test_split()
  assert loaded.evaluate(windows, truth) == held
  forecast = loaded.predict(windows[:3])
  assert forecast.shape == (3, 12, 1)
  padded = np.full((2, 60, 1), np.nan, np.float32)  # series of two lengths, NaN-padded
  padded[0, :48], padded[1] = windows[0], np.concatenate([windows[2][:12], windows[1]])
  np.testing.assert_allclose(loaded.predict(padded), forecast[[0, 1]], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loaded.rollout(windows[:3], 12), forecast, rtol=1e-5, atol=1e-4)
  out = run("seqjax.predict", f"--workdir={tmp_path / 'run'}", f"--input={path}",
            f"--output={tmp_path / 'next.csv'}")
  assert out.returncode == 0, out.stderr
  lines = (tmp_path / "next.csv").read_text().splitlines()
  # A long CSV in, a long forecast out: its hours continued past the last (1199).
  assert lines[0] == "hour,load" and len(lines) == 13
  assert [line.split(",")[0] for line in lines[1:]] == [str(h) for h in range(1200, 1212)]
  np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]],
                             loaded.predict(readers.read(str(path), "x", series=True,
                                                         time_column="hour").x)[0, :, 0],
                             rtol=1e-5)


def data_config(path, kind="classification", **task):
  """configs/data.py for `path`, as one model (the default ensemble's members train as one
  program; tests of what a run does need only one)."""
  config = configlib.load("data", kind)
  config.unlock()
  config.task.train = str(path)
  config.task.update(task)
  config.population.seeds, config.population.select = 1, "all"
  config.population.learning_rates = ()
  return config


def make(config):
  return data.make(config.task, config.train.batch_size)


def test_test_file_with_other_columns_is_refused(tmp_path):
  (tmp_path / "a.csv").write_text("t,v\n" + "".join(f"{i},{i % 7}\n" for i in range(300)))
  (tmp_path / "b.csv").write_text("t,w\n" + "".join(f"{i},{i % 7}\n" for i in range(300)))
  config = data_config(tmp_path / "a.csv", "forecast", time_column="t", window=10, horizon=3,
                       test=str(tmp_path / "b.csv"))
  with pytest.raises(validate.ConfigError, match=r"header does not match the training file's: "
                     r"column 1 is 'w', the training file's is 'v'"):
    make(config)


def test_test_csv_with_another_header_is_refused(tmp_path, labelled_csv):
  labelled_csv(tmp_path / "a.csv", n=50)
  text = (tmp_path / "a.csv").read_text().replace("t0,", "start,", 1)
  (tmp_path / "b.csv").write_text(text)
  with pytest.raises(validate.ConfigError, match="column 1 is 'start', the training file's is "
                     "'t0'"):
    make(data_config(tmp_path / "a.csv", test=str(tmp_path / "b.csv")))


def test_bad_file_from_the_command_line_exits_2_and_keeps_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n')
  out = run("seqjax.main", "--config=configs/data.py", f"--workdir={workdir}",
            f"--config.task.train={tmp_path / 'nope.npz'}")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: task.train='{tmp_path / 'nope.npz'}': no such file"]
  assert (workdir / "metrics.jsonl").read_text().startswith('{"step": 1')


def test_series_are_split_by_time_and_normalised_on_the_training_part(tmp_path):
  steps = 500
  series = np.arange(steps, dtype=np.float32)  # rising: any leak of the future shows
  np.save(tmp_path / "s.npy", series)
  task = make(data_config(tmp_path / "s.npy", "forecast", window=10, horizon=5))
  train_end = steps - int(steps * 0.2) - int(steps * 0.1)
  last_train = task.train_examples.starts.max() + 10 + 5
  assert last_train == train_end  # every training window ends inside the training part
  val_first = task.validation.starts.min() + 10
  test_first = task.test.starts.min() + 10
  assert val_first == train_end and test_first == steps - int(steps * 0.2)
  assert task.info["x_shift"][0] == pytest.approx(np.arange(train_end).mean())


def test_sequence_split_is_seeded_and_disjoint(tmp_path, labelled_csv):
  path = labelled_csv(tmp_path / "l.csv", n=100)
  a, b = make(data_config(path)), make(data_config(path))
  np.testing.assert_array_equal(a.test_raw[0], b.test_raw[0])
  assert a.train_examples.size == 70 and a.validation.size == 10 and a.test.size == 20
  c = make(data_config(path, split_seed=1))
  assert not np.array_equal(a.test_raw[0], c.test_raw[0])


def test_feed_gives_keras_epochs_and_the_same_batch_for_a_step_whatever_the_chunk(tmp_path):
  examples = data.Examples({"x": np.arange(10, dtype=np.float32)[:, None, None],
                            "y": np.arange(10), "weight": np.ones(10, np.float32)}, 10)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
  f = feed.Feed(examples, batch_size=4, seed=3, mesh=mesh, steps=12)
  assert f.steps == 12
  whole = jax.device_get(f.chunk(0))
  epoch = np.concatenate([whole["y"][i] for i in range(3)])
  weight = np.concatenate([whole["weight"][i] for i in range(3)])
  assert sorted(epoch[weight > 0]) == list(range(10)) and weight.sum() == 10
  later = jax.device_get(f.chunk(5))
  np.testing.assert_array_equal(later["y"][0], whole["y"][5])
  f.close()


def test_the_compiled_train_loop_does_not_grow_with_the_file(tmp_path, labelled_csv):
  from seqjax.train import planning, programs
  sizes = []
  for n in (200, 2000):
    path = labelled_csv(tmp_path / f"l{n}.csv", n=n)
    run_ = planning.plan(data_config(path))
    fed = feed.Feed(run_.task.train_examples, 32, 0, run_.mesh, run_.total)
    lowered = programs.jit_train_loop(run_, fed.abstract_inputs).lower(
        run_.state, *run_.loop_args(), np.int32(1),
        programs.zero_sums(run_, fed.abstract_inputs), *fed.abstract_inputs)
    sizes.append(len(lowered.as_text()))
    fed.close()
  assert sizes[0] == sizes[1]


@pytest.mark.slow
def test_builtin_runs_load_and_predict(tmp_path):
  out = run("seqjax.main", "--config=configs/freq.py:quick", f"--workdir={tmp_path / 'freq'}")
  assert out.returncode == 0, out.stderr[-2000:]
  loaded = seqjax.load(tmp_path / "freq")
  from seqjax.data.tasks import freq
  x = np.asarray(freq.sine(np.float32(3.0), np.float32(0.2), 100))[None, :, None]
  assert loaded.predict(x).shape == (1, 1) and loaded.kind == "freq"
  # Without params/ (a run stopped early, or an older one): its newest checkpoint.
  import shutil
  shutil.copytree(tmp_path / "freq", tmp_path / "older", ignore=shutil.ignore_patterns("params"))
  older = seqjax.load(tmp_path / "older")
  assert older.step == loaded.step == 20
  np.testing.assert_array_equal(older.predict(x), loaded.predict(x))
  (tmp_path / "older" / "params").mkdir()  # made at the start, nothing saved in it yet
  assert seqjax.load(tmp_path / "older").step == 20
  shutil.rmtree(tmp_path / "older" / "params")
  with pytest.raises(validate.ConfigError, match="no saved parameters"):
    shutil.rmtree(tmp_path / "older" / "checkpoints")
    seqjax.load(tmp_path / "older")
  (tmp_path / "older" / "params").mkdir()  # killed before anything was saved
  with pytest.raises(validate.ConfigError, match="the run has no saved parameters yet .* rerun "
                     "its training command"):
    seqjax.load(tmp_path / "older")
  np.save(tmp_path / "sines.npy", np.repeat(x[..., 0], 3, axis=0))
  out = run("seqjax.predict", f"--workdir={tmp_path / 'freq'}",
            f"--input={tmp_path / 'sines.npy'}", f"--output={tmp_path / 'f.csv'}")
  assert out.returncode == 0, out.stderr
  lines = (tmp_path / "f.csv").read_text().splitlines()
  assert lines[0] == "y0" and len(lines) == 4
  assert float(lines[1]) == pytest.approx(float(loaded.predict(x)[0, 0]), rel=1e-5)
  for output in (tmp_path / "missing" / "f.csv", "/proc/f.csv"):  # no folder; not writable
    out = run("seqjax.predict", f"--workdir={tmp_path / 'freq'}",
              f"--input={tmp_path / 'sines.npy'}", f"--output={output}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and f"--output='{output}'" in lines[0], lines
  out = run("seqjax.main", "--config=configs/sine.py:quick", f"--workdir={tmp_path / 'sine'}")
  assert out.returncode == 0, out.stderr[-2000:]
  sine = seqjax.load(tmp_path / "sine")
  prefix = np.sin(np.linspace(0, 1, 20))[None, :, None]
  assert sine.rollout(prefix, 5).shape == (1, 5, 1)
  with pytest.raises(ValueError, match="per-step model"):
    loaded.rollout(x, 3)


def test_rollout_takes_params_or_the_variables_of_init():
  from seqjax.model import sequence
  model = sequence.SequenceModel(hidden=4, head="per_step")
  variables = model.init(jax.random.key(0), np.zeros((1, 3, 1), np.float32))
  prefix = np.ones((2, 3, 1), np.float32)
  np.testing.assert_array_equal(rollout.rollout(model, variables, prefix, 4),
                                rollout.rollout(model, variables["params"], prefix, 4))


def test_datafiles_csv_header_and_lengths(tmp_path):
  (tmp_path / "a.csv").write_text("1,2,3,0\n4,5,,1\n")
  arrays = readers.read(str(tmp_path / "a.csv"), "task.train")
  np.testing.assert_array_equal(arrays.lengths, [3, 2])
  np.testing.assert_array_equal(arrays.y, [0, 1])


@pytest.mark.slow
def test_the_readme_own_data_commands_run_as_written(tmp_path):
  import re
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  section = readme[readme.index("## Your own data"):]
  commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
  os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  for command in commands:
    out = subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True,
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, (command, out.stderr[-2000:])
  with open(tmp_path / "runs" / "mine" / "results.json") as f:
    results = json.load(f)
  assert results["test"]["accuracy"] > results["baselines"]["majority_class"]["accuracy"]
  predicted = np.loadtxt(tmp_path / "pred.csv", delimiter=",", skiprows=1)
  labels = np.loadtxt(tmp_path / "labelled.csv", delimiter=",")[:, -1]
  assert predicted.shape == (300,) and np.mean(predicted == labels) > 0.9


def test_the_readme_lstm_and_rollout_block_runs_as_written():
  import re
  with open(os.path.join(ROOT, "README.md")) as f:
    block = re.findall(r"```python\n(.*?)```", f.read(), re.S)[1]
  namespace = {}
  exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
  assert namespace["future"].shape == (8, 100, 1)


@pytest.mark.slow
def test_file_run_killed_then_rerun_is_bit_identical(tmp_path, variable_npz):
  """The fed batches, the early-stopping history and the best parameters survive kill -9."""
  import signal
  import time
  path = variable_npz(tmp_path / "seqs.npz")
  args = ["--config=configs/data.py:regression", "--config.mesh.cpu_devices=0", *ONE_MODEL,
          f"--config.task.train={path}", "--config.train.epochs=0",
          "--config.train.steps=1500", "--config.train.checkpoint_every=10",
          "--config.train.eval_every=20", "--config.train.early_stopping=8"]
  whole = tmp_path / "whole"
  out = run("seqjax.main", f"--workdir={whole}", *args)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((whole / "results.json").read_text())
  # Killed after the best step and before the early stop: the resumed run must read
  # back the best evaluation and the evaluations since it.
  kill_at = results["params_step"] // 10 * 10 + 10
  assert kill_at < results["steps"] < 1500
  cut = tmp_path / "cut"
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  proc = subprocess.Popen([sys.executable, "-m", "seqjax.main", f"--workdir={cut}", *args],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
  t0 = time.time()
  while not (cut / "checkpoints" / str(kill_at)).is_dir():
    assert proc.poll() is None and time.time() - t0 < 120
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  out = run("seqjax.main", f"--workdir={cut}", *args)
  assert out.returncode == 0 and "resumed from the checkpoint" in out.stdout, out.stderr[-2000:]
  assert (whole / "results.json").read_text() == (cut / "results.json").read_text()
  a, b = seqjax.load(whole), seqjax.load(cut)
  assert a.step == b.step
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  # Rerun after it stopped early: no more training, the same results.
  (cut / "results.json").unlink()
  out = run("seqjax.main", f"--workdir={cut}", *args)
  assert out.returncode == 0 and "/1500 " not in out.stdout, out.stdout  # no progress lines
  assert (whole / "results.json").read_text() == (cut / "results.json").read_text()


@pytest.mark.slow
def test_a_population_trains_on_a_file_and_selects_on_validation(tmp_path, labelled_csv):
  """Every member reads the same batches and splits (the config's seed); the first member
  is that seed trained alone; the best is chosen on validation, reported on test."""
  import seqjax
  from seqjax.train import trainer
  path = labelled_csv(tmp_path / "l.csv", n=120)
  config = configlib.override(data_config(path), {
      "train.epochs": 3, "train.min_steps": 0, "population.seeds": 3,
      "population.select": "best"})
  results = trainer.train_and_evaluate(config, str(tmp_path / "pop"))
  alone = trainer.train_and_evaluate(configlib.override(data_config(path), {
      "train.epochs": 3, "train.min_steps": 0}), str(tmp_path / "alone"))
  first = results["members"][0]
  for split in ("test", "validation"):
    for k, v in first[split].items():
      np.testing.assert_allclose(v, alone[split][k], rtol=1e-5, atol=1e-6)
  best = results["population"]["best"]
  validation = [m["validation"]["accuracy"] for m in results["members"]]
  assert validation[best] == max(validation)
  assert results["test"] == results["members"][best]["test"]
  assert set(results["baselines"]) == set(alone["baselines"])
  run = seqjax.load(tmp_path / "pop")
  x, y = run.test_split()[:2]
  assert run.member == best and run.predict(x).shape == y.shape


def test_a_test_file_without_labels_is_refused(tmp_path, labelled_csv):
  labelled_csv(tmp_path / "a.csv", n=50)
  np.savez(tmp_path / "t.npz", x=np.zeros((5, 30)))
  with pytest.raises(validate.ConfigError, match=r"task\.test=.*t\.npz': classification needs "
                     "labels"):
    make(data_config(tmp_path / "a.csv", test=str(tmp_path / "t.npz")))


def test_a_bidirectional_forecaster_is_refused_even_one_step_ahead(tmp_path, monkeypatch):
  """The targets of a forecast are later inputs: reading backwards would see them."""
  np.save(tmp_path / "s.npy", np.sin(np.arange(400, dtype=np.float32) / 5))
  config = data_config(tmp_path / "s.npy", "forecast", window=10, horizon=1)
  config.model.bidirectional = True
  monkeypatch.setattr(programs, "make_train_loop", lambda *a: pytest.fail("compiled"))
  with pytest.raises(validate.ConfigError, match="model.bidirectional=True is invalid: this "
                     "task predicts next values") as e:
    trainer.train_and_evaluate(config, str(tmp_path / "wd"))
  assert "\n" not in str(e.value)


def test_a_small_file_trains_at_least_min_steps_in_whole_epochs(tmp_path, labelled_csv):
  from seqjax.train import planning
  path = labelled_csv(tmp_path / "l.csv", n=50)  # 35 training rows: 2 steps an epoch
  config = configlib.override(data_config(path), {"train.epochs": 3, "train.min_steps": 25})
  run = planning.plan(config)
  assert run.task.steps_per_epoch == 2 and run.total == 26  # 13 epochs
  assert planning.plan(configlib.override(config, {"train.min_steps": 0})).total == 6
  with pytest.raises(validate.ConfigError, match="train.min_steps"):
    planning.plan(configlib.override(config, {"train.min_steps": -1}))


def test_the_validation_and_test_splits_hold_every_class_in_its_share():
  import ml_collections
  cfg = ml_collections.ConfigDict({"split_seed": 3, "test_fraction": 0.2,
                                   "validation_fraction": 0.1})
  labels = np.repeat([0, 1, 2], [30, 10, 60])
  train, val, test = data.split(100, cfg, False, labels)
  assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
  assert np.bincount(labels[val], minlength=3).tolist() == [3, 1, 6]
  assert np.bincount(labels[test], minlength=3).tolist() == [6, 2, 12]
  again = data.split(100, cfg, False, labels)
  assert all((a == b).all() for a, b in zip(again, (train, val, test), strict=True))


def test_a_small_held_out_set_is_one_batch_of_its_own_size(tmp_path, labelled_csv,
                                                            monkeypatch):
  """Not a padded batch of train.eval_batch_size: a validation split of a few series is
  evaluated every epoch."""
  from seqjax.train import driver, planning
  path = labelled_csv(tmp_path / "l.csv", n=50)
  run = planning.initialize(planning.plan(data_config(path)))
  evaluator = driver.evaluator(run, 1024)
  shapes, put = [], feed.put
  monkeypatch.setattr(feed, "put", lambda tree, s: (
      shapes.append(tree["x"].shape[0]) if isinstance(tree, dict) and "x" in tree else None,
      put(tree, s))[1])
  preds, _ = evaluator(run.state.params, run.task.validation)
  assert len(preds) == run.task.validation.size == 5
  assert shapes and max(shapes) <= -(-5 // jax.device_count()) * jax.device_count()
  one_by_one = np.concatenate([evaluator.predict(run.state.params, _take(run.task.validation, i))
                               for i in range(5)])
  np.testing.assert_allclose(preds, one_by_one, rtol=1e-5, atol=1e-6)


def _take(examples, i):
  import dataclasses
  return dataclasses.replace(examples, arrays={k: v[i:i + 1] for k, v in examples.arrays.items()},
                             size=1)


def test_a_relative_forecaster_moves_with_the_level_of_its_window(tmp_path):
  """task.relative: inputs and outputs are taken from each window's last value, so the
  same window raised by c is forecast raised by c (predict, rollout and evaluate)."""
  t = np.arange(300, dtype=np.float32)
  np.save(tmp_path / "s.npy", np.sin(t / 6) + 0.01 * t)
  config = configlib.override(data_config(tmp_path / "s.npy", "forecast", window=24,
                                          horizon=6), {"train.epochs": 2,
                                                       "train.min_steps": 0})
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  run = seqjax.load(tmp_path / "run")
  assert run.info["relative"]
  windows, truth = run.test_split()
  c = 50.0
  # float32 values near 50 carry ~4e-6 absolute rounding into the normalised inputs.
  atol = 64 * np.finfo(np.float32).eps * c
  np.testing.assert_allclose(run.predict(windows + c), run.predict(windows) + c, atol=atol)
  np.testing.assert_allclose(run.rollout(windows + c, 6), run.rollout(windows, 6) + c,
                             atol=atol)
  np.testing.assert_allclose(run.predict(windows), run.rollout(windows, 6), atol=atol)
  lifted = run.evaluate(windows + c, truth + c)
  for k, v in run.evaluate(windows, truth).items():
    np.testing.assert_allclose(lifted[k], v, rtol=1e-4)


def test_a_pandas_index_column_is_a_header_named_index(tmp_path):
  """`,0` over `1821,269` (pandas' to_csv of a Series): the first row is a header."""
  (tmp_path / "lynx.csv").write_text(",0\n" + "".join(f"{1821 + i},{100 + i}\n"
                                                        for i in range(80)))
  arrays = readers.read(str(tmp_path / "lynx.csv"), "task.train", series=True,
                        time_column="index")
  assert arrays.x.shape == (1, 80, 1) and arrays.x[0, 0, 0] == 100
  # A numeric first row without an empty first cell stays data.
  (tmp_path / "wide.csv").write_text("1,2,0\n3,4,1\n5,6,0\n")
  assert readers.read(str(tmp_path / "wide.csv"), "task.train").x.shape == (3, 2, 1)


def test_a_short_series_holds_one_horizon_in_each_held_out_part(tmp_path):
  np.save(tmp_path / "s.npy", np.arange(114, dtype=np.float32))
  task = make(data_config(tmp_path / "s.npy", "forecast", window=48, horizon=12))
  # 10% of 114 steps is 11: the validation part grows to a horizon, 12 steps.
  assert task.validation.size == 1 and task.test.size == 22 - 12 + 1
  assert task.train_examples.starts.max() + 48 + 12 == 114 - 22 - 12



def test_a_forecaster_refuses_a_pooled_head(tmp_path):
  from seqjax.train import planning
  np.save(tmp_path / "s.npy", np.sin(np.arange(300, dtype=np.float32) / 5))
  config = data_config(tmp_path / "s.npy", "forecast", window=10, horizon=2)
  config.model.pool = "mean"
  with pytest.raises(validate.ConfigError, match="model.pool=.*predicts every step"):
    planning.plan(config)


def test_a_header_is_a_word_over_numbers_and_labels_may_be_words(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).round(3)
  labels = np.where(x[:, 0] > 0, "yes", "no")
  rows = "".join(",".join(map(str, r)) + f",{lab}\n" for r, lab in zip(x, labels, strict=True))
  (tmp_path / "bare.csv").write_text(rows)  # no header: row 1 ends in a word, like the rest
  (tmp_path / "named.csv").write_text("t0,t1,t2,t3,t4,label\n" + rows)
  for name in ("bare.csv", "named.csv"):
    arrays = readers.read(str(tmp_path / name), "task.train")
    assert arrays.x.shape == (40, 5, 1) and arrays.y.tolist() == labels.tolist()
    np.testing.assert_allclose(arrays.x[0, :, 0], x[0])
  assert readers.read(str(tmp_path / "named.csv"), "task.train").label == "label"
  # Dates over dates say nothing; "Sales" over numbers names the columns.
  (tmp_path / "s.csv").write_text("Time,Sales\n" + "".join(f"1991-{m:02d},{m}\n"
                                                            for m in range(1, 13)))
  series = readers.read(str(tmp_path / "s.csv"), "task.train", series=True,
                        time_column="Time")
  assert series.x.shape == (1, 12, 1) and series.x[0, -1, 0] == 12
  with pytest.raises(validate.ConfigError, match=r"row 3, column 2 is 'x', not a number"):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,yes\n3,x,no\n")
    readers.read(str(tmp_path / "bad.csv"), "task.train")


@pytest.mark.slow
def test_word_labels_train_and_predict_as_words(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 12)).round(3)
  labels = np.where(x[:, :3].sum(1) > 0, "up", "down")
  path = tmp_path / "w.csv"
  path.write_text("".join(",".join(map(str, r)) + f",{lab}\n"
                          for r, lab in zip(x, labels, strict=True)))
  config = configlib.override(data_config(path), {"train.epochs": 5, "train.min_steps": 0})
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["test"]["accuracy"] > 0.7
  run = seqjax.load(tmp_path / "run")
  assert run.info["classes"] == ["down", "up"]
  xs, ys, lengths = run.test_split()
  predicted = run.predict(xs, lengths)
  assert set(predicted.tolist()) <= {"down", "up"}
  assert np.mean(predicted == ys) == pytest.approx(results["test"]["accuracy"])


def test_a_bad_cell_is_named_by_its_own_column_in_either_csv_layout(tmp_path):
  (tmp_path / "long.csv").write_text("t,a,b\n1,0.5,0.1\n2,0.6,oops\n")
  with pytest.raises(validate.ConfigError, match=r"row 3, column 3 is 'oops', not a number"):
    readers.read(str(tmp_path / "long.csv"), "task.train", series=True, time_column="t")
  (tmp_path / "wide.csv").write_text("label,t0,t1\n0,0.5,0.1\n1,0.6,oops\n")
  with pytest.raises(validate.ConfigError, match=r"row 3, column 3 is 'oops', not a number"):
    readers.read(str(tmp_path / "wide.csv"), "task.train", label="label")


@pytest.mark.parametrize("step,season", [
    ("1h", 24), ("1D", 7), ("7D", 52), ("31D", 12), ("91D", 4), ("365D", 0), ("3D", 0)])
def test_the_season_comes_from_the_steps_of_the_time_column(step, season):
  times = np.datetime64("2020-01-01T00:00") + np.arange(30) * np.timedelta64(
      int(step[:-1]), step[-1])
  assert data.calendar_season(times)[0] == season
  assert data.calendar_season(np.arange(30.0)) == (0, None)  # numbered steps say nothing
  assert data.calendar_season(None) == (0, None)


def test_a_monthly_file_takes_season_12_and_a_window_that_fits(tmp_path):
  t = np.arange(144)
  long = write_monthly_csv(tmp_path / "long.csv", 100 + t + 10 * np.sin(2 * np.pi * t / 12))
  task = make(data_config(long, "forecast", time_column="month"))
  assert task.info["season"] == 12 and task.info["window"] == data.PREFERRED_WINDOW
  assert "seasonal_naive" in task.baselines()
  # 36 months, a quarter ahead: the window shrinks to a season, never below it.
  short = write_monthly_csv(tmp_path / "short.csv", 100 + t[:36])
  task = make(data_config(short, "forecast", time_column="month", horizon=3))
  assert task.info["window"] == 12 and task.info["season"] == 12
  assert task.train_examples.size == 36 - 7 - 3 - 12 - 3 + 1  # less test, validation parts
  with pytest.raises(validate.ConfigError, match="too short .* a shorter task.horizon fits"):
    make(data_config(short, "forecast", time_column="month", horizon=12))
  # A window asked for is kept, and must fit.
  assert make(data_config(long, "forecast", time_column="month", window=24)).info["window"] == 24
  with pytest.raises(validate.ConfigError, match="task.window=40 plus task.horizon=3"):
    make(data_config(short, "forecast", time_column="month", window=40, horizon=3))


@pytest.mark.slow
def test_a_log_forecaster_learns_the_log_and_reports_the_files_units(tmp_path):
  t = np.arange(160)
  values = np.exp(0.02 * t) * (10 + 3 * np.sin(2 * np.pi * t / 12))  # the season grows
  path = write_monthly_csv(tmp_path / "growth.csv", values)
  config = configlib.override(data_config(path, "forecast", time_column="month", log=True,
                                          horizon=6),
                              {"train.epochs": 2, "train.min_steps": 0, "model.hidden": 8})
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  run = seqjax.load(tmp_path / "run")
  assert run.info["log"]
  windows, truth = run.test_split()
  forecast = run.predict(windows)
  assert (forecast > 0).all()
  held = results["test"]
  np.testing.assert_allclose(held["mae"], np.abs(forecast - truth).mean(), rtol=1e-4)
  np.testing.assert_allclose(held["mae@6"], np.abs(forecast - truth)[:, -1].mean(), rtol=1e-4)
  np.testing.assert_allclose(run.rollout(windows, 6), forecast, rtol=1e-4)
  # A baseline is judged in the same units: persistence repeats the last value.
  persistence = np.abs(windows[:, -1:] - truth).mean()
  np.testing.assert_allclose(results["baselines"]["persistence"]["mae"], persistence, rtol=1e-4)
  with pytest.raises(validate.ConfigError, match="every value must be above 0"):
    run.predict(np.where(np.arange(windows.shape[1])[None, :, None] == 3, 0.0, windows))


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path):
  """Excel's UTF-8 files start with a BOM: a numeric first row stays a row (rows in equal
  rows out), and a header's first name is the name."""
  (tmp_path / "bare.csv").write_bytes(b"\xef\xbb\xbf0.5636,1.2,0\n0.1,0.2,1\n0.3,0.4,0\n")
  bare = readers.read(str(tmp_path / "bare.csv"), "task.train")
  assert bare.x.shape == (3, 2, 1) and bare.x[0, 0, 0] == np.float32(0.5636)
  assert readers.read(str(tmp_path / "bare.csv"), "x", inputs_only=True).x.shape[0] == 3
  (tmp_path / "named.csv").write_bytes(b"\xef\xbb\xbfa,b,label\n1,2,0\n3,4,1\n")
  assert readers.read(str(tmp_path / "named.csv"), "task.train").columns == ["a", "b"]


def test_a_value_beyond_float32_is_one_line_without_warnings(tmp_path):
  import warnings
  (tmp_path / "big.csv").write_text("a,b,label\n1,1e300,0\n3,4,1\n")
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # numpy's overflow warnings would print before the line
    with pytest.raises(validate.ConfigError, match="x holds 1e\\+300"):
      readers.read(str(tmp_path / "big.csv"), "task.train")


@pytest.mark.slow
def test_a_fixed_length_run_refuses_other_lengths_reruns_as_is_and_refuses_new_data(tmp_path):
  """A headerless CSV one column wider than the training file would read its label column
  as a step: a run trained on one length refuses any other, in one line. Rerunning the
  finished run adds nothing; rerunning it on a changed file is refused."""
  from seqjax import predict
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 20)).round(3), rng.integers(0, 2, 40)
  rows = lambda x, y: "".join(",".join(map(str, r)) + f",{c}\n"  # noqa: E731
                              for r, c in zip(x, y, strict=True))
  path, workdir = tmp_path / "train.csv", tmp_path / "run"
  path.write_text(rows(x, y))
  config = configlib.override(data_config(path),
                              {"train.epochs": 2, "train.min_steps": 0, "model.hidden": 4})
  first = trainer.train_and_evaluate(config, str(workdir))
  run_ = seqjax.load(workdir)
  assert predict.read_inputs(run_, str(path))[0].shape == (40, 20, 1)
  wide = np.concatenate([x, x[:, :10]], axis=1)
  (tmp_path / "wide.csv").write_text(rows(wide, y))
  with pytest.raises(validate.ConfigError,
                     match=r"--input=.*wide.csv.: the file has sequences of 31 steps; the "
                           r"run was trained on sequences of exactly 20"):
    predict.read_inputs(run_, str(tmp_path / "wide.csv"))
  with pytest.raises(validate.ConfigError, match="x has sequences of 12 steps"):
    run_.predict(x[:, :12])
  metrics = (workdir / "metrics.jsonl").read_bytes()
  assert trainer.train_and_evaluate(config, str(workdir)) == first
  assert (workdir / "metrics.jsonl").read_bytes() == metrics  # no second final evaluation
  path.write_text(path.read_text().replace(str(x[3, 2]), str(x[3, 2] + 1), 1))
  with pytest.raises(validate.ConfigError, match=r"task.train=.* the file is not the one the "
                     r"run in --workdir=.* trained on \(its checksum in data.json differs\)"):
    trainer.train_and_evaluate(config, str(workdir))
  assert (workdir / "metrics.jsonl").read_bytes() == metrics
  assert json.loads((workdir / "results.json").read_text()) == first


def test_a_season_from_dates_that_leaves_no_training_window_is_dropped(tmp_path):
  weekly = tmp_path / "weekly.csv"
  days = np.datetime64("2020-01-06") + 7 * np.arange(60)
  weekly.write_text("week,v\n" + "".join(f"{d},{i % 9}\n" for i, d in enumerate(days)))
  task = make(data_config(weekly, "forecast", time_column="week"))
  assert task.info["season"] == 0 and task.train_examples.size > 0
  assert "seasonal_naive" not in task.baselines()


def test_sequences_normalised_by_the_dataset_by_each_series_or_both():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 5.0, size=(4, 6, 2))
  lengths = np.array([6, 4, 6, 2])
  shift, scale = np.array([1.0, 2.0]), np.array([4.0, 0.5])
  valid = (np.arange(6)[None, :] < lengths[:, None])[..., None]
  by_dataset = data.normalize(x, lengths, shift, scale)
  np.testing.assert_allclose(by_dataset, np.where(valid, (x - shift) / scale, 0), rtol=1e-6)
  by_series = data.normalize(x, lengths, shift, scale, by="series")
  for i, n in enumerate(lengths):  # each sequence's valid steps: mean 0, std 1 per feature
    np.testing.assert_allclose(by_series[i, :n].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(by_series[i, :n].std(0), 1, rtol=1e-5)
    assert not by_series[i, n:].any()
  # A level and amplitude per sequence change nothing "series" reads.
  moved = x * np.array([7.0, 0.1, 2.0, 30.0])[:, None, None] - 40.0
  np.testing.assert_allclose(data.normalize(moved, lengths, shift, scale, by="series"),
                             by_series, atol=1e-5)
  both = data.normalize(x, lengths, shift, scale, by="both")
  assert both.shape == (4, 6, 4)
  np.testing.assert_array_equal(both, np.concatenate([by_dataset, by_series], 2))


@pytest.mark.slow
def test_a_run_normalised_both_ways_reads_twice_the_features_and_predicts_alike(tmp_path,
                                                                              capsys):
  path, x = write_shapes_csv(tmp_path / "shapes.csv")
  config = configlib.override(data_config(path, normalize="both"),
                              {"train.epochs": 3, "train.min_steps": 0, "model.hidden": 8})
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  # The model summary names what the LSTM reads: both normalisations, side by side.
  assert (f"model: LSTM 8 (max over time) -> head Dense 64 -> 2; {results['parameters']:,} "
          "parameters; input [batch, 30 steps, 2 features] -> 2 classes"
          in capsys.readouterr().out)
  run = seqjax.load(tmp_path / "run")
  assert (tmp_path / "run" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
  assert run.info["in_features"] == 1 and run.info["model_features"] == 2
  assert run.evaluate(*run.test_split()) == results["test"]  # exactly
  assert run.predict(x[:5, :, None]).shape == (5,)
  with pytest.raises(validate.ConfigError, match="2 features a step; the run was trained on 1"):
    run.predict(np.zeros((3, 30, 2), np.float32))


@pytest.mark.slow
def test_a_run_normalised_by_series_ignores_each_inputs_level_and_scale(tmp_path):
  path, x = write_shapes_csv(tmp_path / "shapes.csv")
  config = configlib.override(data_config(path, normalize="series"),
                              {"train.epochs": 2, "train.min_steps": 0, "model.hidden": 8})
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  run = seqjax.load(tmp_path / "run")
  proba = run.predict_proba(x[:20, :, None])
  np.testing.assert_allclose(run.predict_proba(x[:20, :, None] * 9.0 + 1e3), proba, atol=1e-4)


def test_auto_normalises_both_ways_unless_the_file_is_z_normalised_already(tmp_path,
                                                                           variable_npz):
  path, x = write_shapes_csv(tmp_path / "shapes.csv")
  task = make(data_config(path))
  assert task.info["normalize"] == "both" and task.in_features == 2
  npz = variable_npz(tmp_path / "seqs.npz")
  task = make(data_config(npz, "regression"))
  assert task.info["normalize"] == "both" and task.in_features == 6
  assert task.train_examples.arrays["x"].shape[2] == 6
  # Every sequence z-normalised (the UCR archive's way): the two would read the same.
  z = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
  y = np.random.default_rng(0).integers(0, 2, len(z))
  np.savez(tmp_path / "z.npz", x=z, y=y)
  task = make(data_config(tmp_path / "z.npz"))
  assert task.info["normalize"] == "dataset" and task.in_features == 1


def test_a_column_named_like_a_label_holds_the_labels_wherever_it_is(tmp_path, capsys):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(60, 6)).round(3)
  y = (x[:, 0] > 0).astype(int)
  header = "t0,t1,t2,Target,t3,t4,t5\n"  # the label in the middle, any case
  rows = "".join(",".join([*map(str, r[:3]), str(lab), *map(str, r[3:])]) + "\n"
                 for r, lab in zip(x, y, strict=True))
  (tmp_path / "mid.csv").write_text(header + rows)
  arrays = readers.read(str(tmp_path / "mid.csv"), "task.train")
  assert arrays.label == "Target" and arrays.label_by == "name"
  assert arrays.y.tolist() == y.tolist() and arrays.x.shape == (60, 6, 1)
  np.testing.assert_allclose(arrays.x[:, :, 0], x, atol=1e-6)
  make(data_config(tmp_path / "mid.csv"))
  assert "the labels are column 'Target' (named like a label column" in capsys.readouterr().out
  # Predicting drops the same column, found by the same name.
  inputs = readers.read(str(tmp_path / "mid.csv"), "--input", label="Target",
                        inputs_only=True, csv_label=arrays.csv_label)
  np.testing.assert_array_equal(inputs.x, arrays.x)
  (tmp_path / "two.csv").write_text("label,t0,y\n1,0.5,0\n0,0.6,1\n")
  with pytest.raises(validate.ConfigError, match=r"columns 'label', 'y' are each named like a "
                     "label column; set task.label"):
    readers.read(str(tmp_path / "two.csv"), "task.train")
  # A fractional label names its column, and what to set for either reading of it.
  (tmp_path / "frac.csv").write_text(header + rows.replace(",1,", ",0.5,", 1))
  with pytest.raises(validate.ConfigError, match=r"found 0\.5 in column 'Target' \(if the "
                     "labels are in another column, set task.label=NAME; if these numbers "
                     r"are targets, set task.kind=regression\)"):
    make(data_config(tmp_path / "frac.csv"))


@pytest.mark.slow
def test_predict_writes_class_probabilities_and_dated_forecast_rows(tmp_path):
  path, x = write_shapes_csv(tmp_path / "shapes.csv", n=60)
  config = configlib.override(data_config(path),
                              {"train.epochs": 1, "train.min_steps": 0, "model.hidden": 4})
  trainer.train_and_evaluate(config, str(tmp_path / "classes"))
  out = run("seqjax.predict", f"--workdir={tmp_path / 'classes'}", f"--input={path}",
            f"--output={tmp_path / 'proba.csv'}", "--proba")
  assert out.returncode == 0, out.stderr
  lines = (tmp_path / "proba.csv").read_text().splitlines()
  assert lines[0] == "0,1" and len(lines) == 61  # a column a class, a row an input row
  proba = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
  np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
  np.testing.assert_allclose(proba, seqjax.load(tmp_path / "classes").predict_proba(
      x[:, :, None]), rtol=1e-5)
  # A forecast from a long CSV: a row a step, its months continued past the last.
  t = np.arange(72)
  series = write_monthly_csv(tmp_path / "sales.csv", 10 + np.sin(2 * np.pi * t / 12) + 0.05 * t)
  config = configlib.override(
      data_config(series, "forecast", time_column="month", horizon=3),
      {"train.epochs": 1, "train.min_steps": 0, "model.hidden": 4})
  trainer.train_and_evaluate(config, str(tmp_path / "forecast"))
  out = run("seqjax.predict", f"--workdir={tmp_path / 'forecast'}", f"--input={series}",
            f"--output={tmp_path / 'next.csv'}")
  assert out.returncode == 0, out.stderr
  lines = (tmp_path / "next.csv").read_text().splitlines()
  assert [line.split(",")[0] for line in lines] == ["month", "2006-01", "2006-02", "2006-03"]
  assert lines[0] == "month,sales"
  out = run("seqjax.predict", f"--workdir={tmp_path / 'forecast'}", f"--input={series}",
            f"--output={tmp_path / 'p.csv'}", "--proba")
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert "--proba: class probabilities need a classification run" in out.stderr


@pytest.mark.parametrize("given,after", [
    (["1949-01", "1949-02", "1949-03"], ["1949-04", "1949-05"]),  # months stay months
    (["2020-01-31", "2020-02-29", "2020-03-31"], ["2020-04-30", "2020-05-31"]),  # month ends
    (["2020-01-01", "2020-04-01", "2020-07-01"], ["2020-10", "2021-01"]),  # quarters
    (["2020-01-06", "2020-01-13", "2020-01-20"], ["2020-01-27", "2020-02-03"]),  # weeks
    (["2020-01-01T22:00", "2020-01-01T23:00"], ["2020-01-02T00:00", "2020-01-02T01:00"]),
])
def test_a_time_column_continues_at_its_own_step(given, after):
  times = np.asarray(given, dtype="datetime64[s]")
  assert calendar.format_times(calendar.continue_times(times, 2), times) == after
  numbers = np.array([1821.0, 1822.0, 1823.0])
  assert calendar.format_times(calendar.continue_times(numbers, 2), numbers) == ["1824", "1825"]
  assert calendar.continue_times(times[:1], 2) is None


@pytest.mark.slow
def test_a_small_file_reports_like_keras_fit_one_line_a_logging_window(tmp_path, capsys):
  path, _ = write_shapes_csv(tmp_path / "shapes.csv", n=60)  # 42 training rows: 2 steps an epoch
  config = configlib.override(data_config(path), {
      "train.epochs": 10, "train.min_steps": 0, "model.hidden": 4, "train.log_every": 6})
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out.splitlines()
  progress = [line for line in out if line.startswith("epoch ")]
  # A line a logging window (steps 6, 12, 18, 20), each evaluation of an epoch in it.
  assert [line.split(" (")[0] for line in progress] == [
      "epoch 3/10", "epoch 6/10", "epoch 9/10", "epoch 10/10"]
  assert "(step 6/20) " in progress[0]
  assert "| validation accuracy=" in progress[0] and " at step 6 (best " in progress[0]
  assert "loss=" in progress[0] and "ETA" in progress[-1]
  # Only the last evaluation has a line of its own.
  assert [line for line in out if line.startswith("validation at step")] == [
      line for line in out if line.startswith("validation at step 20")]
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert len([r for r in records if r["split"] == "train"]) == len(progress)
  assert len([r for r in records if r["split"] == "validation"]) == 10  # every epoch, logged


def _headline(png) -> float:
  """The first figure in a picture's headline (its PNG Title: what the picture shows)."""
  from PIL import Image
  with Image.open(png) as image:
    title = image.text["Title"]
  return float(title.split(": ")[-1].split()[1] if "accuracy" in title
               else title.split("MAE ")[1].split()[0].rstrip(";"))


@pytest.mark.slow
def test_each_picture_headlines_the_test_figure_of_results_json(tmp_path):
  few = {"train.epochs": 1, "train.min_steps": 0, "model.hidden": 4}
  path, _ = write_shapes_csv(tmp_path / "shapes.csv", n=60)
  results = trainer.train_and_evaluate(configlib.override(data_config(path), few),
                                       str(tmp_path / "classes"))
  shown = _headline(tmp_path / "classes" / "confusion.png")
  assert shown == pytest.approx(results["test"]["accuracy"], abs=5e-4)
  assert results["test_set"] == "the test split, 12 sequences"  # 20% of 60
  # Two targets: the MAE over both, as results.json's.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(80, 12)).astype(np.float32)
  np.savez(tmp_path / "two.npz", x=x, y=np.stack([x.mean(1), x.max(1)], 1))
  config = configlib.override(data_config(tmp_path / "two.npz", "regression"), few)
  results = trainer.train_and_evaluate(config, str(tmp_path / "targets"))
  shown = _headline(tmp_path / "targets" / "predictions.png")
  assert shown == pytest.approx(results["test"]["mae"], rel=5e-4)
  # A forecast of two features: a row each, the headline over both.
  t = np.arange(72)
  rows = "".join(f"{2000 + i // 12}-{i % 12 + 1:02d},{10 + np.sin(i / 2):.4f},{5 + 0.1 * i:.4f}\n"
                 for i in t)
  (tmp_path / "two_series.csv").write_text("month,sales,visits\n" + rows)
  config = configlib.override(data_config(tmp_path / "two_series.csv", "forecast",
                                           time_column="month", horizon=3), few)
  results = trainer.train_and_evaluate(config, str(tmp_path / "forecast"))
  shown = _headline(tmp_path / "forecast" / "forecast.png")
  assert shown == pytest.approx(results["test"]["mae"], rel=5e-4)
