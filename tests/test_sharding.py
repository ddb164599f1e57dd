"""Meshes: 8 simulated CPU devices compute what 1 device computes; checkpoints move across meshes.

The multi-device runs happen in subprocesses, since the device count is fixed
when JAX starts (`XLA_FLAGS=--xla_force_host_platform_device_count=8`).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import cli_process
import pytest

from seqjax import scaling
from seqjax.config import configlib
from seqjax.runtime import sharding, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("data,model,devices,expected", [
    (-1, 1, 8, (8, 1)), (-1, 2, 8, (4, 2)), (2, -1, 8, (2, 4)), (1, 1, 8, (1, 1)),
    (4, 2, 8, (4, 2)), (3, 1, 8, (3, 1)), (-1, 1, 1, (1, 1))])
def test_mesh_shape(data, model, devices, expected):
  assert sharding.mesh_shape(data, model, devices) == expected


def run_on_devices(script: str, devices: int = 8, env=None, timeout=900) -> str:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", **(env or {}))
  proc = cli_process.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc.stdout


COMMON = """
import json, os, shutil, sys
import numpy as np
import jax
from seqjax import sweep
from seqjax.config import configlib, validate
from seqjax.runtime import writers
from seqjax.train import trainer
from ml_collections import config_flags

assert jax.device_count() == 8, jax.device_count()
tmp = sys.argv[1] if len(sys.argv) > 1 else os.environ["WORK"]

def with_mesh(config, data, model=1, **fields):
  return configlib.override(config, {"mesh.data": data, "mesh.model": model, **fields})

def losses(workdir):
  return [r["loss"] for r in writers.read_metrics(workdir) if r["split"] == "train"]

def same(a, b, what, rtol=2e-4):
  np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6, err_msg=what)
"""


@pytest.mark.slow
def test_8_devices_train_like_1_and_checkpoints_move_across_meshes(tmp_path):
  out = run_on_devices(COMMON + """
freq = configlib.load("freq", "quick")
runs = {}
for data in (1, 8):
  workdir = f"{tmp}/freq{data}"
  runs[data] = trainer.train_and_evaluate(with_mesh(freq, data), workdir)
same(losses(f"{tmp}/freq8"), losses(f"{tmp}/freq1"), "loss curve, 8 vs 1 device")
same(runs[8]["test"]["mae"], runs[1]["test"]["mae"], "held-out MAE")
assert len(losses(f"{tmp}/freq1")) == 2

# Resume the step-10 checkpoint of each run on the other mesh.
for saved, resumed in ((8, 1), (1, 8)):
  workdir = f"{tmp}/resume{saved}to{resumed}"
  shutil.copytree(f"{tmp}/freq{saved}", workdir)
  shutil.rmtree(f"{workdir}/checkpoints/{freq.train.steps}")
  out = trainer.train_and_evaluate(with_mesh(freq, resumed), workdir)
  same(out["test"]["mae"], runs[saved]["test"]["mae"], f"resumed {saved}->{resumed}")
  same(losses(workdir), losses(f"{tmp}/freq{saved}"), f"loss curve {saved}->{resumed}")

# Stateful training: the carry [L, B, H] is split along data (batch 5 on 5 devices).
echo = configlib.load("echo", "quick,seed")
acc = [trainer.train_and_evaluate(with_mesh(echo, d), f"{tmp}/echo{d}")["test"]["accuracy"]
       for d in (1, 5)]
same(losses(f"{tmp}/echo5"), losses(f"{tmp}/echo1"), "stateful loss curve, 5 vs 1 device")
same(acc[1], acc[0], "stateful accuracy")

# A mesh that does not divide the batch: a ConfigError before anything runs.
try:
  trainer.train_and_evaluate(with_mesh(freq, 8, **{"train.batch_size": 12}), f"{tmp}/bad")
  raise AssertionError("no error")
except validate.ConfigError as e:
  print("batch error:", e)
  assert "train.batch_size=12 is invalid: must be divisible by mesh.data=8" in str(e)
  assert not os.path.exists(f"{tmp}/bad/checkpoints")
print("OK")
""", env={"WORK": str(tmp_path)})
  assert "OK" in out


@pytest.mark.slow
def test_grid_of_16_on_a_4x2_mesh_equals_1_device(tmp_path):
  out = run_on_devices(COMMON + """
config = configlib.load("freq", "quick")
runs = [{"seed": s, "model.kernel_gain": g} for s in range(8) for g in (0.5, 1.0)]
results = {}
for data, model in ((1, 1), (2, 4)):
  workdir = f"{tmp}/grid{data}x{model}"
  results[data] = sweep.train_grid(with_mesh(config, data, model), runs, workdir)
  results[data, "curve"] = [r["loss"] for r in writers.read_metrics(workdir)
                            if r["split"] == "train"]
same([r["test"]["mae"] for r in results[2]], [r["test"]["mae"] for r in results[1]],
     "16 held-out MAEs, 4x2 vs 1x1 mesh")
same(results[2, "curve"], results[1, "curve"], "median loss curve")
with open(f"{tmp}/grid2x4/timing.json") as f:
  assert json.load(f)["mesh"] == {"data": 2, "model": 4}
try:
  sweep.train_grid(with_mesh(config, 2, 4), runs[:6], f"{tmp}/bad")
  raise AssertionError("no error")
except validate.ConfigError as e:
  print("grid error:", e)
  assert "the number of members=6 is invalid: must be divisible by mesh.model=4" in str(e)
print("OK")
""", env={"WORK": str(tmp_path)})
  assert "OK" in out


def test_main_reports_a_bad_mesh_in_one_line(tmp_path):
  proc = cli_process.run(
      [sys.executable, "-m", "seqjax.main", "--config=configs/freq.py:quick",
       f"--workdir={tmp_path}", "--config.mesh.data=3"], cwd=ROOT, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines == ["error: config.train.batch_size=64 is invalid: must be divisible by "
                   "mesh.data=3 (the 3 devices it splits over); change train.batch_size or "
                   "set --config.mesh.data"], proc.stderr
  assert not (tmp_path / "config.json").exists()  # refused before the workdir is written


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  """A real multi-host job on loopback: 2 processes x 4 CPU devices, jax.distributed + gloo."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  command = [sys.executable, "-m", "seqjax.main", "--config=configs/freq.py:quick"]
  base = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      command + [f"--workdir={tmp_path / 'two'}"], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True,
      env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i))) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert "validation at step 20" in outs[0] and "validation at" not in outs[1]  # process 0 reports
  one = cli_process.run(command + [f"--workdir={tmp_path / 'one'}"], cwd=ROOT, env=base,
                       capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  results = [json.load(open(tmp_path / run / "results.json")) for run in ("two", "one")]
  assert results[0]["test"]["mae"] == pytest.approx(results[1]["test"]["mae"], rel=1e-4)
  timing = json.load(open(tmp_path / "two" / "timing.json"))
  assert (timing["processes"], timing["mesh"]) == (2, {"data": 8, "model": 1})
  train_lines = [r for r in writers.read_metrics(str(tmp_path / "two")) if r["split"] == "train"]
  with open(tmp_path / "two" / "metrics.jsonl") as f:
    assert len(f.readlines()) == 4  # 2 train + 2 eval lines, written once (by process 0)
  assert [r["step"] for r in train_lines] == [10, 20]
  assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["10", "20"]


def test_weak_scaling_measurement_on_one_device():
  row = scaling.measure(configlib.load("freq", "quick"), devices=1, per_device_batch=4, steps=2)
  assert row["devices"] == 1 and row["global_batch"] == 4 and row["steps_per_s"] > 0
  lines = scaling.table([row, dict(row, devices=2, steps_per_s=row["steps_per_s"] / 2)])
  assert lines.splitlines()[3].endswith("| 0.50 |")


@pytest.mark.parametrize("batch,cores,hidden,expected", [
    (32, 2, None, 2), (5, 2, None, 1), (1, 16, None, 1), (12, 8, None, 6), (64, 1, None, 1),
    (32, 2, 100, 2), (32, 2, 32, 1), (64, 8, 64, 4), (64, 8, 16, 1)])
def test_auto_cpu_devices_divide_the_batch(batch, cores, hidden, expected):
  assert sharding.auto_cpu_devices(batch, cores, hidden) == expected


@pytest.mark.slow
def test_main_splits_a_cpu_into_devices_without_deadlock(tmp_path):
  """`mesh.cpu_devices=2` makes two CPU devices and the run uses both.

  With 100 steps dispatched one by one between two logs, XLA's CPU all-reduce
  deadlocked in some runs (in every run of freq.py:seed on 2 devices); the
  loop now runs the steps in device-side loops, one call in flight. The race
  did not fire every time, so this can catch a regression, not always.
  """
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  proc = cli_process.run(
      [sys.executable, "-m", "seqjax.main", "--config=configs/freq.py:quick",
       f"--workdir={tmp_path}", "--config.mesh.cpu_devices=2", "--config.train.steps=100",
       "--config.train.log_every=100", "--config.train.eval_every=100",
       "--config.train.checkpoint_every=100", "--config.train.batch_size=32"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(env, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  timing = json.loads((tmp_path / "timing.json").read_text())
  assert timing["devices"] == 2 and timing["mesh"] == {"data": 2, "model": 1}
