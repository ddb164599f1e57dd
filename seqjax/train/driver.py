"""The driver loop of every run (one model or a population): chunks of steps, cadence, stops.

It calls a run's compiled train loop (`programs.jit_train_loop`) with about
`CALL_SECONDS` of steps at a time, and between calls logs, checkpoints,
evaluates and stops, each on its own cadence (`config.train.*_every`). What
is logged and evaluated, and what a NaN means, is the `Monitor`'s: one model
stops the run with FloatingPointError, a population freezes the member and goes on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from seqjax.config import cli, validate
from seqjax.data import feed as feed_lib
from seqjax.runtime import files, sharding, writers
from seqjax.train import checkpoint, planning, programs, workdirs

# Seconds of training per device call once a call has been timed.
CALL_SECONDS = 0.5


class StopSignals:
  """Records SIGTERM (a preemption notice) and SIGINT (Ctrl-C) while training, instead of
  dying mid-step: the driver saves a checkpoint of the current step, then stops. A second
  Ctrl-C exits at once (exit code 130)."""

  SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}

  def __init__(self):
    self.requested = None  # the signal number, once one arrived
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested == signal.SIGINT:
      print("stopped: a second Ctrl-C; exiting without a checkpoint", file=sys.stderr,
            flush=True)
      os._exit(130)
    self.requested = signum  # the stop's one line comes once the checkpoint is saved

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def itstime(step: int, every: int, total: int) -> bool:
  """True every `every` steps and always on the last step (big_vision)."""
  return step == total or (every > 0 and step % every == 0)


def longest_call(train_config: ml_collections.ConfigDict, total: int) -> int:
  """The most steps one call of the train loop runs: from one stop to the next
  (`next_stop`), never more than the shortest cadence."""
  everys = (train_config.log_every, train_config.checkpoint_every, train_config.eval_every)
  return min([total] + [every for every in everys if every > 0])


def next_stop(step: int, train_config: ml_collections.ConfigDict, total: int) -> int:
  """The first step after `step` that logs, checkpoints, evaluates or ends the run."""
  stops = [total]
  for every in (train_config.log_every, train_config.checkpoint_every, train_config.eval_every):
    if every > 0:
      stops.append((step // every + 1) * every)
  return min(stops)


class Monitor(Protocol):
  """What the driver reports to (`seqjax.train.monitor.Monitor`)."""

  def check(self, step: int, totals: dict[str, Any]) -> bool:
    """After each call: raises, or returns False to stop training (nothing left to train)."""

  def loop_args(self, args: tuple) -> tuple:
    """The train loop's arguments for the next call (between the state and the step count)."""

  def train_scalars(self, sums: dict[str, Any], steps: int) -> dict[str, float]:
    """The scalars logged for the metric sums of the last `steps` steps."""

  steps_per_epoch: int  # 0 for data generated without end

  def evaluate(self, step: int, state, quiet: bool = False) -> Any:
    """Evaluates on the validation set at `step`, logs it, returns what the run reports;
    `quiet`: without a console line of its own."""

  def summary(self) -> str:
    """The latest validation figure and the best so far, for a progress line."""

  def stop_early(self) -> bool:
    """After an evaluation: True to end training now (early stopping)."""

  def save_best(self) -> None:
    """Writes the best parameters kept since its last call (with each checkpoint, and
    when training ends)."""


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """A run's held-out sets and their evaluation.

  Attributes:
    validation: the set evaluated while training: early stopping, `train.keep_best` and
      `population.select = "best"` choose by it.
    test: the set that results.json reports. A task of files has a split of its own for
      it; a generated task has one set of new examples for both (`test is validation`).
    evaluate: `(params, set) -> (preds, metrics)`: a single model's preds [N, ...] and
      float metrics, or a population's [M, N, ...] and [M] metrics.
    shared: every member of a population is evaluated on the same examples (a file's
      splits), not on a set of its own (generated from its seed).
    arrays: `(set) -> {name: array}`, a set as the task's `plot` and metrics take it.
  """
  validation: Any
  test: Any
  evaluate: Callable[[Any, Any], tuple[Any, dict[str, Any]]]
  shared: bool
  arrays: Callable[[Any], dict[str, Any]]

  @property
  def separate_test(self) -> bool:
    """True when the test set is not the validation set."""
    return self.test is not self.validation


class HeldOutSets:
  """The two kinds of held-out sets a run can have; its task picks one (`Task.held_out`)."""

  def __init__(self, run: planning.Run, batch_size: int, params):
    self._run, self._batch_size, self._params = run, batch_size, params

  def generated(self) -> HeldOut:
    """New examples made on the devices from each member's eval key, evaluated in one
    compiled call; one set for validation and test."""
    run = self._run
    eval_set = programs.jit_eval_set(run)(run.data_key, run.eval_key)
    evaluate = programs.compile_ahead(programs.jit_evaluate(run, self._batch_size),
                                      self._params, eval_set)
    return HeldOut(eval_set, eval_set, evaluate, shared=False, arrays=lambda s: s)

  def from_host(self, validation, test) -> HeldOut:
    """A validation and a test split on the host (`Examples`), evaluated batch by batch."""
    return HeldOut(validation, test, evaluator(self._run, self._batch_size), shared=True,
                   arrays=lambda s: s.all())


@dataclasses.dataclass
class Started:
  """A run ready for its loop: initialized, restored, its programs compiled."""
  run: planning.Run
  state: Any  # restored from the latest checkpoint, or fresh
  first_step: int
  ckpt: checkpoint.Checkpointer
  train_loop: Any  # compiled `programs.jit_train_loop(run)`
  zero_sums: Any  # its empty metric window
  held_out: HeldOut
  feed: Any  # the task's `feed`: `feed.Feed` (files) or `feed.OnDevice`


def start(run: planning.Run, workdir: str, eval_batch_size: int) -> Started:
  """Initializes `run` (from `planning.plan`), restores its latest
  checkpoint in `workdir`, builds the held-out set and compiles the programs.

  XLA compiles the train loop (for the abstract state) in a worker thread while
  this one compiles and runs the init, restores, builds the held-out set and
  compiles its evaluation: on two cores the smaller programs then cost no extra
  wall time.
  """
  # A chunk of host batches holds no more steps than a call runs: one epoch's evaluation
  # after every step of a small file would otherwise send hundreds of unread batches.
  feed = run.task.feed(run.config.train.batch_size, run.config.seed, run.mesh,
                       longest_call(run.config.train, run.total))
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile") as pool:
    zero_sums = programs.zero_sums(run, feed.abstract_inputs)
    train_loop = pool.submit(programs.compile_ahead,
                             programs.jit_train_loop(run, feed.abstract_inputs), run.state,
                             *run.loop_args(), np.int32(1), zero_sums, *feed.abstract_inputs)
    run = planning.initialize(run)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
      state = ckpt.restore_latest(run.state)
      step = first_step(state)
      if step > run.total:
        validate.fail("train.steps", run.total, f"the checkpoint in --workdir={workdir!r} is "
                      f"at step {step}, after this config's last step; use a new --workdir")
    except BaseException:
      ckpt.close()
      raise
    workdirs.write_config(run.config, workdir)  # only now: a failed resume keeps the old one
    writers.repair_metrics(workdir, step)
    if step:
      writers.console(f"resumed from the checkpoint at step {step}")
    feed.prefetch(step)
    held_out = run.task.held_out(HeldOutSets(run, eval_batch_size, state.params))
    return Started(run, state, step, ckpt, train_loop.result(), zero_sums, held_out, feed)


def evaluator(run: planning.Run, batch_size: int) -> feed_lib.Evaluator:
  """The evaluation of held-out sets on the host (`Examples`), batch by batch."""
  return feed_lib.Evaluator(programs.make_predict(run.model, run.task, run.mesh),
                            run.task.loss_and_metrics, run.mesh, batch_size, members=run.grid,
                            folds=run.task.folds)


def first_step(state) -> int:
  """The step `state` is at, readable on every process (a population's members share it)."""
  if state.diverged_at is None:
    return int(state.step)
  return int(sharding.on_host(state.step.sharding.mesh, state.step)[0])


class MetricWindows:
  """The metric sums since the last log, kept beside each checkpoint
  (`workdir/metric_windows.jsonl`), so the first window logged after a resume
  averages the same steps as an uninterrupted run's."""

  def __init__(self, workdir: str):
    self._path = files.path(workdir) / "metric_windows.jsonl"
    self._file = None

  def restore(self, step: int) -> tuple[Any, int]:
    """(sums, steps) saved with the checkpoint at `step`; (None, 0) when none was."""
    if not step or not self._path.exists():
      return None, 0
    found = None
    for record in files.read_json_lines(self._path):
      if record.get("step") == step:
        found = record
    if found is None or not found["steps"]:
      return None, 0
    sums = {k: np.asarray(v, found["dtypes"][k]) for k, v in found["sums"].items()}
    return sums, found["steps"]

  def save(self, step: int, sums, steps: int) -> None:
    if not sharding.is_writer():
      return
    if self._file is None:
      self._file = files.LineFile(self._path)
    record = {"step": step, "steps": steps,
              "sums": {k: np.asarray(v).tolist() for k, v in (sums or {}).items()},
              "dtypes": {k: str(np.asarray(v).dtype) for k, v in (sums or {}).items()}}
    self._file.write(json.dumps(record) + "\n")

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def loop(train_loop, state, loop_args: tuple, *, total: int,
         train_config: ml_collections.ConfigDict, monitor: Monitor,
         ckpt: checkpoint.Checkpointer, writer: writers.MetricWriter,
         workdir: str, zero_sums: Any, t_start: float,
         feed: Any) -> tuple[Any, Any, float | None]:
  """Trains `state` from its step to `total`, then evaluates once more.

  Args:
    train_loop: `(state, *loop_args, num_steps, sums) -> (state, totals)`, compiled.
    state: the restored (or fresh) state; donated to `train_loop`.
    total: the last step.
    train_config: `config.train` (the cadences).
    monitor: checks totals, makes the logged scalars, evaluates.
    ckpt, writer: where checkpoints and metrics go.
    workdir: the run's folder (the metric windows saved with checkpoints).
    zero_sums: `programs.zero_sums(run)`, the empty metric window.
    t_start: `time.perf_counter()` at the run's start, for the compile time.
    feed: the task's feed; each call takes its inputs last (a chunk of batches from
      the host; none for batches made on the devices).

  Returns:
    (state, the monitor's final evaluation, seconds to the end of the first
    step, or None when there was none to run).

  Raises:
    cli.Preempted: SIGTERM or SIGINT; a checkpoint of the current step was saved first.
    Whatever `monitor.check` raises (a NaN in a single run).
  """
  t = train_config
  step = first_step(state)
  progress = writers.Progress(step, total, monitor.steps_per_epoch)
  # Evaluations more often than log lines (every epoch of a small file): the log line
  # carries the latest and the best, as Keras' `fit` shows them.
  quiet = 0 < t.eval_every < t.log_every
  chunk, compile_s = 1, None
  windows = MetricWindows(workdir)
  window, window_steps = windows.restore(step)  # metric sums since the last log
  early = bool(step) and step < total and monitor.stop_early()  # it stopped early before
  with StopSignals() as signals:
    while step < total and not early:
      # Steps per call: 1 at first (its end is the first step, `compile_s`), then
      # about CALL_SECONDS of work, so SIGTERM and progress wait no longer than that.
      n = min(next_stop(step, t, total) - step, chunk, feed.steps)
      t_call = time.perf_counter()
      if window is None:
        window = zero_sums
      state, totals = train_loop(state, *monitor.loop_args(loop_args), np.int32(n), window,
                                 *feed.inputs(step))
      feed.prefetch(step + n)  # the next chunk, gathered and sent while the devices run
      totals = jax.device_get(totals)
      elapsed = time.perf_counter() - t_call
      ran = int(totals["steps"])
      step += ran
      if compile_s is None:
        compile_s = time.perf_counter() - t_start
        progress.start(step)
      else:
        chunk = max(1, int(CALL_SECONDS * ran / max(elapsed, 1e-6)))
        if jax.process_count() > 1:  # every process must run the same number of steps
          chunk = int(multihost_utils.broadcast_one_to_all(np.int32(chunk)))
      try:
        if not monitor.check(step, totals):
          break
      except FloatingPointError:  # a single model's NaN: its best so far stays usable
        monitor.save_best()
        raise
      window = totals["sums"]  # the loop added this call's steps to the window it was given
      window_steps += ran
      stop = signals.requested or 0  # read once: a signal between two reads would skip the save
      if jax.process_count() > 1:  # any process's notice stops all of them at this step
        stop = int(np.max(multihost_utils.process_allgather(np.int32(stop))))
      # Evaluations before the checkpoint of their step: a run resumed from that
      # checkpoint then has every evaluation up to it (each member's best and early stopping);
      # and before the log line, which shows the step's validation figure.
      early = False
      if itstime(step, t.eval_every, total) and step != total:
        monitor.evaluate(step, state, quiet=quiet)
        early = monitor.stop_early()
      if itstime(step, t.log_every, total):
        scalars = monitor.train_scalars(window, window_steps)
        window, window_steps = None, 0
        writer.write(step, "train", scalars)
        progress.report(step, {k: v for k, v in scalars.items() if "/" not in k},  # no members
                        monitor.summary() if quiet else "")
      if itstime(step, t.checkpoint_every, total) or stop or early:
        # The best parameters first: a checkpoint is never ahead of the store, whose
        # parameters its evaluations chose (a store ahead of it is saved again on resume).
        monitor.save_best()
        ckpt.save(step, state)
        windows.save(step, window, window_steps)
      if stop:
        ckpt.wait()
        raise cli.Preempted(f"stopped by {StopSignals.SIGNALS[stop]} at step {step}; checkpoint "
                        "saved; rerun the same command to resume", stop)
      if early:
        cap = f" or {t.early_stopping_steps} steps" if t.early_stopping_steps else ""
        writers.console(f"early stopping at step {step}: no better validation figure in "
                        f"{t.early_stopping} evaluations{cap}")
        break
  windows.close()
  final = monitor.evaluate(step if early else total, state)
  monitor.save_best()
  return state, final, compile_s
