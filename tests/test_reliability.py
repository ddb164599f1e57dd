"""Preemption-safe, bit-exact resume; bad input fails early and loses nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from seqjax.config import configlib, validate
from seqjax.train import checkpoint, programs, trainer, workdirs

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _run(args, **kw):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


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
  result = _run(echo_command + [f"--workdir={workdir}"])
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


# (config file, arg, field override or None, value, field named in the message)
BAD_INPUTS = [
    ("freq", "quick", "task.name", "fre", "task.name"),
    ("freq", "quick", "task.max_freq", 60, "task.max_freq"),
    ("freq", "quick", "task.max_freq", 1, "task.max_freq"),
    ("freq", "quick", "task.time_steps", 0, "task.time_steps"),
    ("freq", "quick", "task.per_freq", -1, "task.per_freq"),
    ("mean", "quick", "task.length", -3, "task.length"),
    ("mean", "quick", "task.train_size", 0, "task.train_size"),
    ("mean", "quick", "task.train_size", 51, "task.train_size"),
    ("echo", "quick", "task.window", 30, "task.window"),
    ("echo", "quick", "task.lag", 5, "task.lag"),
    ("echo", "quick,window=1,lag=5", "task.chunk", 30, "task.chunk"),
    ("echo", "quick,seed", "train.batch_size", 3, "train.batch_size"),
    ("sine", "quick", "task.width", 0.0, "task.width"),
    ("sine", "quick", "task.free_run", -1, "task.free_run"),
    ("freq", "quick", "model.hidden", 0, "model.hidden"),
    ("freq", "quick", "model.num_layers", -1, "model.num_layers"),
    ("freq", "quick", "model.recurrent_gain", 0.0, "model.recurrent_gain"),
    ("freq", "quick", "model.kernel_gain", -1.0, "model.kernel_gain"),
    ("freq", "quick", "model.recurrent_init", "ortho", "model.recurrent_init"),
    ("freq", "quick", "model.activation", "swish2", "model.activation"),
    ("freq", "quick", "model.dropout", 1.5, "model.dropout"),
    ("echo", "quick", "model.dropout", 0.5, "model.dropout"),  # no layer to apply it to
    ("freq", "quick", "model.remat", -2, "model.remat"),
    ("freq", "quick", "model.param_dtype", "float16", "model.param_dtype"),
    ("freq", "quick", "model.dtype", "float16", "model.dtype"),
    ("freq", "quick", "model.chrono_tmax", -5.0, "model.chrono_tmax"),
    ("freq", "quick", "train.batch_size", 0, "train.batch_size"),
    ("freq", "quick", "train.steps", -10, "train.steps"),
    ("freq", "quick", "train.optimizer", "adamm", "train.optimizer"),
    ("freq", "quick", "train.schedule", "linear", "train.schedule"),
    ("freq", "quick", "train.learning_rate", -1e-3, "train.learning_rate"),
    ("freq", "quick", "train.end_lr_factor", 2.0, "train.end_lr_factor"),
    ("freq", "quick", "train.grad_clip", -1.0, "train.grad_clip"),
    ("freq", "quick", "train.log_every", 0, "train.log_every"),
    ("freq", "quick", "train.epochs", 3, "train.epochs"),  # online data has no epochs
    # Numbers that are not finite, or out of any sane range.
    ("freq", "quick", "train.learning_rate", float("inf"), "train.learning_rate"),
    ("freq", "quick", "train.grad_clip", float("nan"), "train.grad_clip"),
    ("freq", "quick", "model.kernel_gain", float("inf"), "model.kernel_gain"),
    ("freq", "quick", "model.forget_bias", float("nan"), "model.forget_bias"),
    ("freq", "quick,seed", "model.dropout", float("nan"), "model.dropout"),
    ("mean", "quick", "model.chrono_tmax", float("nan"), "model.chrono_tmax"),
    ("freq", "quick", "train.end_lr_factor", float("nan"), "train.end_lr_factor"),
    ("freq", "quick", "model.recurrent_gain", float("inf"), "model.recurrent_gain"),
    ("freq", "quick", "seed", 99999999999999999999999, "seed"),
    ("freq", "quick", "seed", -1, "seed"),
    ("freq", "quick", "train.steps", 10**20, "train.steps"),
    ("freq", "quick", "train.batch_size", 10**8, "train.batch_size"),
    ("freq", "quick", "model.hidden", 10**6, "model.hidden"),
    ("freq", "quick", "model.hidden", 60000, "model.hidden"),  # fits no device's memory
    ("freq", "quick", "train.batch_size", 2**22, "train.batch_size"),  # nor this batch
    ("freq", "quick", "model.num_layers", 1000, "model.num_layers"),
    ("freq", "quick", "model.head_hidden", (0,), "model.head_hidden"),
    ("freq", "quick", "model.unroll", -1, "model.unroll"),
    ("freq", "quick", "model.precision", "fast", "model.precision"),
    ("freq", "quick", "model.out_activation", "softmax2", "model.out_activation"),
    ("freq", "quick", "model.bias_init", "ones", "model.bias_init"),
    ("freq", "quick", "train.eval_every", -1, "train.eval_every"),
    ("freq", "quick", "train.checkpoint_every", 0, "train.checkpoint_every"),
    ("freq", "quick", "train.eval_batch_size", 0, "train.eval_batch_size"),
    ("freq", "quick", "train.warmup_steps", -1, "train.warmup_steps"),
    ("freq", "quick,seed", "train.epochs", -1, "train.epochs"),
    ("freq", "quick", "train.weight_decay", -0.1, "train.weight_decay"),
    ("freq", "quick", "mesh.model", 2, "mesh.model"),  # a single run has one model
    ("freq", "quick", "task.eval_per_freq", 0, "task.eval_per_freq"),
    ("mean", "quick", "task.eval_size", 0, "task.eval_size"),
    ("echo", "quick", "task.classes", 0, "task.classes"),
    ("echo", "quick", "task.seq_len", 0, "task.seq_len"),
    ("echo", "quick", "task.eval_size", 0, "task.eval_size"),
    ("sine", "quick", "task.time_steps", 0, "task.time_steps"),
    ("sine", "quick", "task.rollout_warmup", 0, "task.rollout_warmup"),
    ("sine", "quick", "task.rollout_size", 0, "task.rollout_size"),
    ("sine", "quick", "task.eval_size", 0, "task.eval_size"),
    ("sine", "quick", "model.bidirectional", True, "model.bidirectional"),  # free-running
    ("sine", "quick,seed", "model.bidirectional", True, "model.bidirectional"),  # next value
    ("echo", "quick,seed", "model.bidirectional", True, "model.bidirectional"),
    ("freq", "quick", "model.merge", "mean", "model.merge"),
    ("freq", "quick", "model.layer_dropout", 0.2, "model.layer_dropout"),  # one layer
    ("freq", "quick", "model.input_dropout", 1.0, "model.input_dropout"),
    ("freq", "quick", "model.recurrent_dropout", -0.1, "model.recurrent_dropout"),
    ("freq", "quick", "model.kernel", "cudnn", "model.kernel"),
]


def _existing_workdir(config, folder):
  """A workdir a run already wrote: its config, a checkpoint folder and a metrics line."""
  (folder / "checkpoints" / "10").mkdir(parents=True)
  (folder / "config.json").write_text(config.to_json_best_effort(indent=2))
  (folder / "metrics.jsonl").write_text('{"step": 10, "split": "train", "loss": 1.0}\n')


@pytest.mark.parametrize("name,arg,field,value,named", BAD_INPUTS,
                         ids=[f"{b[2]}={b[3]}" for b in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_field(name, arg, field, value, named, tmp_path,
                                                monkeypatch, snapshot):
  """Refused before compiling, in one line naming the field; an existing workdir untouched."""
  good = configlib.load(name, arg)
  config = configlib.override(good, {field: value})
  compiled = []
  monkeypatch.setattr(programs, "make_train_loop", lambda *a: compiled.append(1))
  workdir = tmp_path / "wd"
  _existing_workdir(good, workdir)
  before = snapshot(workdir)
  with pytest.raises(validate.ConfigError) as info:
    trainer.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert "\n" not in message and f"config.{named}=" in message
  assert not compiled and snapshot(workdir) == before


def test_bad_input_table_is_large_enough():
  assert len(BAD_INPUTS) >= 70


def test_the_memory_check_counts_the_batches(monkeypatch):
  """echo with a batch of ten million: its one-hot batches alone take tens of GiB; a
  device of 40 GiB was let through and ran out of memory compiling the step."""
  from seqjax.train import planning
  monkeypatch.setattr(planning, "device_memory_bytes", lambda device: 40 * 2**30)
  config = configlib.override(configlib.load("echo", "quick"), {"train.batch_size": 10**7})
  with pytest.raises(validate.ConfigError, match=r"train.batch_size=10000000 .* batches "
                     r"\d+\.\d GiB\), more than the 40.0 GiB"):
    planning.plan(config)
