"""Preemption-safe, bit-exact resume; bad input fails early and loses nothing."""

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

from seqjax.config import configlib, validate
from seqjax.train import checkpoint, programs, trainer, workdirs

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _run(args, **kw):
  return cli_process.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def _start(command, workdir):
  return subprocess.Popen(command + [f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(workdir, step, proc, timeout=120):
  path = os.path.join(workdir, "checkpoints", str(step))
  t0 = time.time()
  while not os.path.isdir(path):
    assert proc.poll() is None, "run ended before the checkpoint appeared"
    assert time.time() - t0 < timeout
    time.sleep(0.02)


def _checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _final_params(workdir):
  # Saved on however many devices the run made (mesh.cpu_devices); read onto this one.
  return checkpoint.restore_latest_params(os.path.join(workdir, "checkpoints"),
                                          jax.devices()[0])


def _same_run(workdir_a, workdir_b):
  for name in ("results.json",):
    with open(os.path.join(workdir_a, name)) as a, open(os.path.join(workdir_b, name)) as b:
      assert a.read() == b.read()
  step_a, params_a = _final_params(workdir_a)
  step_b, params_b = _final_params(workdir_b)
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


@pytest.mark.slow
def test_kill_9_then_rerun_is_bit_identical(echo_command, uninterrupted, tmp_path):
  workdir = str(tmp_path / "wd")
  proc = _start(echo_command, workdir)
  _wait_for_checkpoint(workdir, 50, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  rerun = _run(echo_command + [f"--workdir={workdir}"])
  assert rerun.returncode == 0, rerun.stderr
  assert "resumed from the checkpoint at step" in rerun.stdout
  _same_run(uninterrupted, workdir)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_then_resumes(echo_command, uninterrupted, tmp_path):
  workdir = str(tmp_path / "wd")
  proc = _start(echo_command, workdir)
  _wait_for_checkpoint(workdir, 50, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err
  stopped_at = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
  assert _checkpoint_steps(workdir)[-1] == stopped_at
  rerun = _run(echo_command + [f"--workdir={workdir}"])
  assert rerun.returncode == 0, rerun.stderr
  assert f"resumed from the checkpoint at step {stopped_at}" in rerun.stdout
  _same_run(uninterrupted, workdir)


DATA_HASH = """
import hashlib, sys, jax, numpy as np
from seqjax.config import configlib
from seqjax.data import tasks
digest = hashlib.sha256()
for name, arg in [(n, None) for n in tasks.generated()] + [("echo", "window=1,lag=5"),
                                                     ("echo", "seed")]:
  config = configlib.load(name, arg)
  key = jax.random.key(config.seed)
  task = tasks.make(config.task, config.train.batch_size)
  step = jax.jit(task.train_batch)
  for s in range(3):
    for leaf in jax.tree.leaves(step(key, np.int32(s))):
      digest.update(np.asarray(leaf).tobytes())
  for leaf in jax.tree.leaves(task.eval_batch(key, jax.random.fold_in(key, 1))):
    digest.update(np.asarray(leaf).tobytes())
print(jax.device_count(), digest.hexdigest())
"""


@pytest.mark.slow
def test_data_generation_is_bit_identical_on_1_and_8_devices():
  outputs = []
  for devices in (1, 8):
    # CPU devices, also where the suite runs on an accelerator (JAX_PLATFORMS=cuda)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    result = _run([sys.executable, "-c", DATA_HASH], env=env)
    assert result.returncode == 0, result.stderr
    count, digest = result.stdout.split()
    assert int(count) == devices
    outputs.append(digest)
  assert outputs[0] == outputs[1]


def test_two_runs_are_bit_identical(echo_command, uninterrupted, tmp_path):
  workdir = str(tmp_path / "wd")
  # A new interpreter beside the fixture's forked one: another string hash seed, too.
  result = _run(echo_command + [f"--workdir={workdir}"], fresh=True)
  assert result.returncode == 0, result.stderr
  _same_run(uninterrupted, workdir)


def test_corrupted_latest_checkpoint_falls_back(tmp_path, capsys, freq_quick, copy_run):
  config = configlib.load("freq", "quick")
  finished, reference = freq_quick
  workdir = str(copy_run(finished, tmp_path / "wd"))
  latest = os.path.join(workdir, "checkpoints", "20")
  for folder, _, files in os.walk(latest):  # truncate every file of the newest checkpoint
    for name in files:
      with open(os.path.join(folder, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(f.name) // 3))
  os.remove(os.path.join(workdir, "results.json"))
  capsys.readouterr()
  resumed = trainer.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "warning: checkpoint 20 is unreadable" in out
  assert "resumed from the checkpoint at step 10" in out
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "20"))
  assert resumed == reference


def test_a_foreign_entry_beside_good_checkpoints_is_set_aside_alone(tmp_path, capsys,
                                                                   freq_quick, copy_run):
  """An empty folder, a stray file and an orbax tmp folder newer than the good
  checkpoints: the empty folder is moved aside alone, the newest good one resumes."""
  config = configlib.load("freq", "quick")
  finished, reference = freq_quick
  workdir = str(copy_run(finished, tmp_path / "wd"))
  checkpoints = os.path.join(workdir, "checkpoints")
  os.mkdir(os.path.join(checkpoints, "70"))
  with open(os.path.join(checkpoints, "80"), "w") as f:
    f.write("not a checkpoint")
  os.mkdir(os.path.join(checkpoints, "90.orbax-checkpoint-tmp-1733"))
  os.remove(os.path.join(workdir, "results.json"))
  capsys.readouterr()
  resumed = trainer.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "resumed from the checkpoint at step 20" in out
  assert os.listdir(os.path.join(workdir, "checkpoints_unreadable")) == ["70"]
  assert {"10", "20"} <= set(os.listdir(checkpoints))
  assert resumed == reference


def test_resume_with_a_different_config_is_refused(tmp_path, freq_quick, copy_run):
  config = configlib.load("freq", "quick")
  workdir = str(copy_run(freq_quick[0], tmp_path / "wd"))
  config.unlock()
  config.model.hidden = 8
  config.train.learning_rate = 0.5
  with pytest.raises(validate.ConfigError,
                     match=r"different config \(model.hidden: 16 -> 8; train.learning_rate"):
    trainer.train_and_evaluate(config, workdir)
  config.model.hidden = 16
  config.train.steps = 30
  config.allow_config_change = True  # the explicit opt-in
  results = trainer.train_and_evaluate(config, workdir)
  assert results["steps"] == 30 and _checkpoint_steps(workdir)[-1] == 30


def test_a_run_written_before_a_config_field_existed_resumes_at_its_default(tmp_path):
  """A workdir from an older seqjax lacks model.precision: at the default it resumes."""
  config = configlib.load("freq", "quick")
  old = json.loads(config.to_json_best_effort())
  del old["model"]["precision"]
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdirs.prepare(config, str(tmp_path))  # no error: "highest" is the default
  config.unlock()
  config.model.precision = "default"
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(validate.ConfigError,
                     match=r"model.precision: '<absent>' -> 'default'"):
    workdirs.prepare(config, str(tmp_path))


def test_unwritable_workdir_fails_before_compiling(tmp_path, monkeypatch):
  config = configlib.load("freq", "quick")
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  compiled = []
  monkeypatch.setattr(programs, "make_train_loop", lambda *a: compiled.append(1))
  with pytest.raises(validate.ConfigError, match="is not writable"):
    trainer.train_and_evaluate(config, str(blocker / "wd"))

  class Full:
    free = 1 << 20
  monkeypatch.setattr(workdirs.shutil, "disk_usage", lambda path: Full)
  with pytest.raises(validate.ConfigError, match="1 MiB free"):
    trainer.train_and_evaluate(config, str(tmp_path / "wd"))
  assert not compiled


def test_the_memory_check_counts_the_batches(monkeypatch):
  """echo with a batch of ten million: its one-hot batches alone take tens of GiB; a
  device of 40 GiB was let through and ran out of memory compiling the step."""
  from seqjax.train import planning
  monkeypatch.setattr(planning, "device_memory_bytes", lambda device: 40 * 2**30)
  config = configlib.override(configlib.load("echo", "quick"), {"train.batch_size": 10**7})
  with pytest.raises(validate.ConfigError, match=r"train.batch_size=10000000 .* batches "
                     r"\d+\.\d GiB\), more than the 40.0 GiB"):
    planning.plan(config)
