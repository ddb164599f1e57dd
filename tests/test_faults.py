"""Faults at every entry point: a run owns its workdir, files survive crashes, stops
end in one line. (Bad inputs, one a row, are the table of tests/test_bad_inputs.py.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import cli_process
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.config import configlib, validate
from seqjax.model import lstm
from seqjax.runtime import writers
from seqjax.train import trainer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FREQ = os.path.join(ROOT, "configs", "freq.py")
ECHO = os.path.join(ROOT, "configs", "echo.py")


def _run(args, cwd=ROOT, **kw):
  return cli_process.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)


def _started(command, workdir, checkpoint_step):
  """The `command` run on `workdir`, once its checkpoint at `checkpoint_step` exists."""
  proc = subprocess.Popen(command + [f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  t0 = time.time()
  while not (workdir / "checkpoints" / str(checkpoint_step)).is_dir():
    assert proc.poll() is None and time.time() - t0 < 120
    time.sleep(0.02)
  return proc


def _one_error_line(result, code, named):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == code, result.stderr
  assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines


def test_bench_refuses_an_output_file_before_running(tmp_path):
  out = tmp_path / "bench.csv"
  out.write_text("kept")
  _one_error_line(_run([sys.executable, "-m", "seqjax.bench", f"--out={out}"]), 2, "--out")
  assert out.read_text() == "kept"


def test_a_config_file_that_raises_is_named_first(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(arg=None):\n  raise RuntimeError('boom')\n")
  result = _run([sys.executable, "-m", "seqjax.main", f"--config={bad}"])
  assert result.returncode == 1
  assert result.stderr.startswith(f"error: the config file {bad} raised RuntimeError: boom")


@pytest.mark.slow
def test_explicit_steps_win_over_quick(tmp_path):
  result = _run([sys.executable, "-m", "seqjax.main", f"--config={FREQ}:quick,steps=30",
                 f"--workdir={tmp_path / 'wd'}"])
  assert result.returncode == 0, result.stderr
  assert json.loads((tmp_path / "wd" / "results.json").read_text())["steps"] == 30


def test_reverse_with_lengths_past_the_end_equals_lengths_at_the_end():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3))
  model = lstm.LSTM(8, 2, reverse=True)
  params = model.init(jax.random.key(1), x)
  run = jax.jit(lambda lengths: model.apply(params, x, lengths=lengths)[1])
  np.testing.assert_array_equal(run(jnp.array([9, 5])), run(jnp.array([5, 5])))


@pytest.mark.parametrize("shape", [(0,), (0, 3)])
def test_a_run_without_workdir_splits_the_cpu_then_reads_its_file(tmp_path, shape):
  """The default workdir is made after the CPU is split into devices (asking for the
  process count first started JAX, and the data config's devices were refused); an
  empty series is one line."""
  np.save(tmp_path / "empty.npy", np.zeros(shape))
  result = _run([sys.executable, "-m", "seqjax.main",
                 f"--config={os.path.join(os.path.dirname(FREQ), 'data.py')}:forecast",
                 f"--config.task.train={tmp_path / 'empty.npy'}"], cwd=tmp_path)
  _one_error_line(result, 2, "task.train=")
  assert "no values in the file" in result.stderr


@pytest.mark.slow
def test_two_runs_without_workdir_get_a_directory_each(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-m", "seqjax.main", f"--config={FREQ}:quick" + a],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for a in ("", ",max_freq=20")]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
  runs = sorted(os.listdir(tmp_path / "runs" / "freq"))
  assert len(runs) == 2
  freqs = {json.loads((tmp_path / "runs" / "freq" / r / "config.json").read_text())["task"][
      "max_freq"] for r in runs}
  assert freqs == {10, 20}
  for r in runs:
    records = writers.read_metrics(tmp_path / "runs" / "freq" / r)
    lines = (tmp_path / "runs" / "freq" / r / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 4  # train and eval at steps 10 and 20, once each


def _stop(proc, timeout=30):
  """SIGSTOP, then wait until every thread is stopped: kill() only queues the signal, and
  the checkpoint writer's threads may write a few more files until the kernel stops them."""
  proc.send_signal(signal.SIGSTOP)
  tasks = f"/proc/{proc.pid}/task"
  t0 = time.time()
  while True:
    states = []
    for tid in os.listdir(tasks):
      try:
        with open(f"{tasks}/{tid}/stat") as f:
          states.append(f.read().rsplit(")", 1)[1].split()[0])
      except FileNotFoundError:  # a thread that ended meanwhile
        pass
    if all(s in "tTZX" for s in states):  # stopped, or ended
      return
    assert time.time() - t0 < timeout, states
    time.sleep(0.01)


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_and_touches_nothing(tmp_path, snapshot,
                                                                          echo_command):
  workdir = tmp_path / "wd"
  first = _started(echo_command, workdir, 20)
  _stop(first)  # hold it still while the second one looks
  try:
    before = snapshot(workdir)
    second = _run(echo_command + [f"--workdir={workdir}"])
    after = snapshot(workdir)
  finally:
    first.send_signal(signal.SIGCONT)
  _one_error_line(second, 2, "is in use by another run")
  assert after == before
  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err


def _tensorboard_scalars(workdir):
  """{(tag, step): value} as TensorBoard reads the event files: in file order, a
  SessionLog START at step s (the purge step of a resumed run) drops steps >= s."""
  import struct

  from tensorboardX.proto import event_pb2
  scalars = {}
  folder = workdir / "tensorboard"
  for name in sorted(os.listdir(folder)):
    data = (folder / name).read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == 1:  # START
        scalars = {k: v for k, v in scalars.items() if k[1] < event.step}
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = value.simple_value
  return scalars


def _records_without_time(workdir):
  return [{k: v for k, v in json.loads(line).items() if k != "time"}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_9_leaves_metrics_as_if_it_never_stopped(echo_command, uninterrupted, tmp_path):
  """Logs every 25 steps, checkpoints every 10: the first window after the resume must
  average the steps before the kill too."""
  workdir = tmp_path / "wd"
  proc = _started(echo_command, workdir, 60)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  rerun = _run(echo_command + [f"--workdir={workdir}"])
  assert rerun.returncode == 0, rerun.stderr
  assert _records_without_time(workdir) == _records_without_time(uninterrupted)
  assert _tensorboard_scalars(workdir) == _tensorboard_scalars(uninterrupted)
  assert (workdir / "results.json").read_text() == (uninterrupted / "results.json").read_text()


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_then_resumes(echo_command, uninterrupted, tmp_path):
  workdir = tmp_path / "wd"
  proc = _started(echo_command, workdir, 50)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
  stopped = int(err.split("stopped by SIGINT (Ctrl-C) at step ")[1].split(";")[0])
  assert os.path.isdir(workdir / "checkpoints" / str(stopped))
  rerun = _run(echo_command + [f"--workdir={workdir}"])
  assert rerun.returncode == 0, rerun.stderr
  assert f"resumed from the checkpoint at step {stopped}" in rerun.stdout
  assert (workdir / "results.json").read_text() == (uninterrupted / "results.json").read_text()


def test_a_torn_metrics_line_is_cut_at_resume(tmp_path, freq_quick, copy_run):
  config = configlib.load("freq", "quick")
  finished, first = freq_quick
  workdir = str(copy_run(finished, tmp_path / "wd"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5')  # what a crash or a full disk leaves
  os.remove(os.path.join(workdir, "results.json"))
  again = trainer.train_and_evaluate(config, workdir)
  assert again == first
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  assert all(json.loads(line) for line in lines)  # the torn line is gone
  # Train and eval at steps 10 and 20 (a finished run's rerun evaluates step 20 again).
  assert [(r["step"], r["split"]) for r in writers.read_metrics(workdir)] == [
      (10, "train"), (10, "validation"), (20, "train"), (20, "validation")]
  assert os.path.exists(os.path.join(workdir, "loss.png"))


@pytest.mark.slow
def test_a_failed_resume_keeps_config_json(tmp_path, freq_quick, copy_run):
  """allow_config_change with a model that does not fit, or fewer steps than the
  checkpoint: refused, and config.json still describes the checkpoints."""
  workdir = copy_run(freq_quick[0], tmp_path / "wd")
  config_json = (workdir / "config.json").read_text()
  for override, named in (("--config.model.hidden=8", "does not fit"),
                          ("--config.train.steps=10", "train.steps")):
    result = _run([sys.executable, "-m", "seqjax.main", f"--config={FREQ}:quick", override,
                   "--config.allow_config_change=True", f"--workdir={workdir}"])
    _one_error_line(result, 2, named)
    assert (workdir / "config.json").read_text() == config_json


def test_a_deleted_metrics_file_is_recreated_and_noted(tmp_path, capsys):
  writer = writers.MetricWriter(tmp_path)
  writer.write(1, "train", {"loss": 1.0})
  (tmp_path / "metrics.jsonl").unlink()
  writer.write(2, "train", {"loss": 0.5})
  writer.close()
  assert "metrics.jsonl was deleted" in capsys.readouterr().out
  assert [r["step"] for r in writers.read_metrics(tmp_path)] == [2]


@pytest.mark.parametrize("seconds,shown", [(59, "00:00:59"), (3 * 86400 + 12 * 3600 + 36 * 60 + 2,
                                                              "3d 12:36:02"),
                                           (1e20, "more than 30 years")])
def test_eta_shows_days(seconds, shown):
  assert writers.duration(seconds) == shown


def test_a_corrupted_checkpoint_is_recovered_quietly(tmp_path, freq_quick, copy_run):
  """One warning line, and no asyncio tracebacks from the reads orbax abandoned."""
  workdir = copy_run(freq_quick[0], tmp_path / "wd")
  cmd = [sys.executable, "-m", "seqjax.main", f"--config={FREQ}:quick", f"--workdir={workdir}"]
  for folder, _, names in os.walk(workdir / "checkpoints" / "20" / "default"):
    for name in names:  # the arrays' data, not the metadata: reads start, then fail
      path = os.path.join(folder, name)
      if "ocdbt" in path or f"{os.sep}d{os.sep}" in path:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 3)
  (workdir / "results.json").unlink()
  result = _run(cmd, fresh=True)  # what the interpreter's finalisation prints is seen
  assert result.returncode == 0, result.stderr
  assert result.stdout.count("warning: checkpoint 20 is unreadable") == 1
  assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr


def test_a_workdir_whose_lock_cannot_be_made_is_one_line(tmp_path, monkeypatch):
  """A read-only workdir (as root, permissions do not stop a write: the open is made to
  fail as a read-only file system makes it)."""
  import errno

  from seqjax.train import workdirs
  real_open = os.open

  def read_only(path, flags, *args):
    if str(path).endswith(".lock"):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *args)

  monkeypatch.setattr(os, "open", read_only)
  with pytest.raises(validate.ConfigError, match=r"is not writable \(Read-only file system\); "
                     "copy the run to a writable place"):
    workdirs.lock(str(tmp_path))


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_naming_the_safe_checkpoint(tmp_path):
  """The workdir on a small tmpfs, filled once the first checkpoint exists: exit 1, one
  line naming the newest finished checkpoint, and a rerun resumes from it."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(disk)],
                    capture_output=True).returncode:
    pytest.skip("mounting a small tmpfs needs root")
  try:
    command = [sys.executable, "-m", "seqjax.main", f"--config={ECHO}:quick",
               "--config.train.steps=100000", "--config.train.checkpoint_every=400",
               "--config.train.log_every=10", f"--workdir={disk / 'wd'}"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (disk / "wd" / "checkpoints" / "400").is_dir() and time.time() < deadline:
      time.sleep(0.2)
    with open(disk / "fill", "wb") as f:  # the rest of the disk
      try:
        while True:
          f.write(b"\0" * 2**20)
      except OSError:
        pass
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, err[-3000:]
    safe = re.search(r"is full; the checkpoint at step (\d+) is safe: free space", lines[0])
    assert safe and (disk / "wd" / "checkpoints" / safe.group(1)).is_dir(), lines
    os.remove(disk / "fill")
    rerun = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
      first = rerun.stdout.readline()
      while first and "resumed" not in first and "task echo" not in first:
        first = rerun.stdout.readline()
      assert f"resumed from the checkpoint at step {safe.group(1)}" in first
    finally:
      rerun.kill()
      rerun.communicate()
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)


def _numpy_loaded(pid: int) -> bool:
  """Whether process `pid` has numpy's core library mapped: seqjax's imports have begun."""
  with open(f"/proc/{pid}/maps") as f:
    return "_multiarray_umath" in f.read()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/<pid>/maps")
@pytest.mark.parametrize("moment,after", [
    ("importing", 0.0), pytest.param("importing", 0.5, marks=pytest.mark.slow),
    pytest.param("compiling", 0.0, marks=pytest.mark.slow),
    pytest.param("compiling", 0.1, marks=pytest.mark.slow),
    pytest.param("compiling", 0.3, marks=pytest.mark.slow)])
def test_a_ctrl_c_before_the_train_loop_ends_in_one_line(tmp_path, moment, after):
  """While the imports load or the train loop compiles: exit 130 within seconds and one
  line, never an import traceback, and never a Ctrl-C that the run outlives (Python's
  KeyboardInterrupt, raised inside JAX's garbage-collection callback, is ignored)."""
  # Python's own Ctrl-C handling, as in a terminal: a process started in the background
  # of a shell inherits SIGINT ignored, and seqjax then leaves it ignored.
  # Steps enough that the run is still going when the Ctrl-C comes (quick's 20 are not).
  proc = subprocess.Popen([sys.executable, "-u", "-m", "seqjax.main", f"--config={FREQ}:quick",
                           "--config.train.steps=100000", f"--workdir={tmp_path / 'wd'}",
                           "--compilation_cache="], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  if moment == "importing":
    while not _numpy_loaded(proc.pid):
      time.sleep(0.005)
  else:  # the last line before the loop; its program compiles in a thread meanwhile
    for line in proc.stdout:
      if line.startswith("validation"):
        break
  time.sleep(after)
  proc.send_signal(signal.SIGINT)
  signalled = time.monotonic()
  _, err = proc.communicate(timeout=60)
  lines = err.strip().splitlines()
  assert proc.returncode == 130 and len(lines) == 1, err[-2000:]
  assert lines[0].startswith("stopped:") and "Ctrl-C" in lines[0], lines
  assert time.monotonic() - signalled < 10
