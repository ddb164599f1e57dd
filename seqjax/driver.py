"""The driver loop shared by single runs and grids: chunks of steps, cadence, stops.

It calls a run's compiled train loop (`programs.jit_train_loop`) with about
`CALL_SECONDS` of steps at a time, and between calls logs, checkpoints,
evaluates and stops, each on its own cadence (`config.train.*_every`). What
is logged and evaluated, and what a NaN means, is the `Monitor`'s: one model
stops the run with FloatingPointError, a grid masks the model and goes on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import threading
import time
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from seqjax import checkpoint, planning, programs, sharding, writers

# Seconds of training per device call once a call has been timed.
CALL_SECONDS = 0.5


class Preempted(Exception):  # noqa: N818  (a stop, not an error)
  """SIGTERM arrived; a checkpoint of the current step was saved before stopping."""


class SigtermFlag:
  """Records SIGTERM (a preemption notice) while training, instead of dying mid-step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def itstime(step: int, every: int, total: int) -> bool:
  """True every `every` steps and always on the last step (big_vision)."""
  return step == total or (every > 0 and step % every == 0)


def next_stop(step: int, train_config: ml_collections.ConfigDict, total: int) -> int:
  """The first step after `step` that logs, checkpoints, evaluates or ends the run."""
  stops = [total]
  for every in (train_config.log_every, train_config.checkpoint_every, train_config.eval_every):
    if every > 0:
      stops.append((step // every + 1) * every)
  return min(stops)


class Monitor(Protocol):
  """What the driver reports to: one model (`train`) or a grid (`sweep`)."""

  def check(self, step: int, totals: dict[str, Any]) -> bool:
    """After each call: raises, or returns False to stop training (nothing left to train)."""

  def train_scalars(self, sums: dict[str, Any], steps: int) -> dict[str, float]:
    """The scalars logged for the metric sums of the last `steps` steps."""

  def evaluate(self, step: int, state) -> Any:
    """Evaluates on the held-out set at `step`, logs it, returns what the run reports."""


@dataclasses.dataclass
class Started:
  """A run ready for its loop: initialized, restored, its programs compiled."""
  run: planning.Run
  state: Any  # restored from the latest checkpoint, or fresh
  first_step: int
  ckpt: checkpoint.Checkpointer
  train_loop: Any  # compiled `programs.jit_train_loop(run)`
  eval_set: Any
  evaluate: Any  # compiled `programs.jit_evaluate(run, ...)`


def start(run: planning.Run, workdir: str, eval_batch_size: int) -> Started:
  """Initializes `run` (from `planning.plan`/`plan_grid`), restores its latest
  checkpoint in `workdir`, builds the held-out set and compiles the programs.

  XLA compiles the train loop (for the abstract state) in a worker thread while
  this one compiles and runs the init, restores, builds the held-out set and
  compiles its evaluation: on two cores the smaller programs then cost no extra
  wall time.
  """
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile") as pool:
    train_loop = pool.submit(programs.compile_ahead, programs.jit_train_loop(run), run.state,
                             *run.loop_args(), np.int32(1))
    run = planning.initialize(run)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    state = ckpt.restore_latest(run.state)
    step = first_step(state)
    if step:
      writers.console(f"resumed from the checkpoint at step {step}")
    eval_set = programs.jit_eval_set(run)(run.data_key, run.eval_key)
    evaluate = programs.compile_ahead(programs.jit_evaluate(run, eval_batch_size),
                                      state.params, eval_set)
    return Started(run, state, step, ckpt, train_loop.result(), eval_set, evaluate)


def first_step(state) -> int:
  """The step `state` is at, readable on every process (a grid's models share it)."""
  if state.diverged_at is None:
    return int(state.step)
  mesh = state.step.sharding.mesh
  return int(jax.jit(lambda s: s[0], out_shardings=sharding.replicated(mesh))(state.step))


def run(train_loop, state, loop_args: tuple, *, total: int,
        train_config: ml_collections.ConfigDict, monitor: Monitor,
        ckpt: checkpoint.Checkpointer, writer: writers.MetricWriter,
        t_start: float) -> tuple[Any, Any, float | None]:
  """Trains `state` from its step to `total`, then evaluates once more.

  Args:
    train_loop: `(state, *loop_args, num_steps) -> (state, totals)`, compiled.
    state: the restored (or fresh) state; donated to `train_loop`.
    total: the last step.
    train_config: `config.train` (the cadences).
    monitor: checks totals, makes the logged scalars, evaluates.
    ckpt, writer: where checkpoints and metrics go.
    t_start: `time.perf_counter()` at the run's start, for the compile time.

  Returns:
    (state, the monitor's final evaluation, seconds to the end of the first
    step, or None when there was none to run).

  Raises:
    Preempted: SIGTERM; a checkpoint of the current step was saved first.
    Whatever `monitor.check` raises (a NaN in a single run).
  """
  t = train_config
  step = first_step(state)
  progress = writers.Progress(step, total)
  chunk, compile_s = 1, None
  window, window_steps = None, 0  # metric sums since the last log
  with SigtermFlag() as sigterm:
    while step < total:
      # Steps per call: 1 at first (its end is the first step, `compile_s`), then
      # about CALL_SECONDS of work, so SIGTERM and progress wait no longer than that.
      n = min(next_stop(step, t, total) - step, chunk)
      t_call = time.perf_counter()
      state, totals = train_loop(state, *loop_args, np.int32(n))
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
      if not monitor.check(step, totals):
        break
      window = totals["sums"] if window is None else jax.tree.map(np.add, window,
                                                                  totals["sums"])
      window_steps += ran
      stop = sigterm.requested  # read once: a signal between two reads would skip the save
      if jax.process_count() > 1:  # any process's notice stops all of them at this step
        stop = bool(np.any(multihost_utils.process_allgather(np.int32(stop))))
      if itstime(step, t.log_every, total):
        scalars = monitor.train_scalars(window, window_steps)
        window, window_steps = None, 0
        writer.write(step, "train", scalars)
        progress.report(step, scalars)
      # Evaluations before the checkpoint of their step: a run resumed from that
      # checkpoint then has every evaluation up to it (a grid's history).
      if itstime(step, t.eval_every, total) and step != total:
        monitor.evaluate(step, state)
      if itstime(step, t.checkpoint_every, total) or stop:
        ckpt.save(step, state)
      if stop:
        ckpt.wait()
        raise Preempted(f"stopped by SIGTERM at step {step}; checkpoint saved; rerun the "
                        "same command to resume")
  return state, monitor.evaluate(total, state), compile_s
