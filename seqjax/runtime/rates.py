"""Steps per second of compiled train programs, after their compiling call.

Used by the commands that compare ways of training (`seqjax.sweep --throughput`,
`seqjax.scaling`); the benchmarks against other libraries time their own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np


def call_steps_per_second(step_fn: Callable, state, steps: int, *args) -> float:
  """Steps per second of `state, _ = step_fn(state, *args)` called `steps` times from
  Python, after one compiling call."""
  state, m = step_fn(state, *args)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step_fn(state, *args)
  jax.block_until_ready(m)
  return steps / (time.perf_counter() - t0)


def loop_steps_per_second(train_loop: Callable, state, steps: int, *args, sums=None) -> float:
  """Steps per second of a device-side loop `train_loop(state, *args, num_steps[, sums])`
  running `steps` steps in one call, after one compiling call of one step."""
  extra = () if sums is None else (sums,)
  state, totals = train_loop(state, *args, np.int32(1), *extra)
  jax.block_until_ready(totals)
  t0 = time.perf_counter()
  state, totals = train_loop(state, *args, np.int32(steps), *extra)
  jax.block_until_ready(totals)
  return steps / (time.perf_counter() - t0)
