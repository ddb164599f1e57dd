"""Metric writers: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow), stdout."""

from __future__ import annotations

import json
import os
import sys
import time

import jax


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch where torch is not loaded yet.

  tensorboardX imports torch when it is installed (to accept torch tensors,
  which seqjax never passes): 1.4 s of a run's start-up on a 2-core CPU.
  `sys.modules["torch"] = None` makes that optional import fail fast.
  """
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files.

  Appends, so a resumed run keeps the lines written before it stopped.
  `enabled=False` (every process of a multi-host job but the first) writes nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
      self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    record = {"step": step, "split": split, "time": time.time(), **scalars}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(f"{split}/{name}", value, step)
    self._tb.flush()

  def close(self) -> None:
    if not self._enabled:
      return
    self._jsonl.close()
    self._tb.close()


def console(message: str) -> None:
  """A line for the person running the experiment (stdout, unbuffered; process 0 only)."""
  if jax.process_index() == 0:
    print(message, flush=True)


class Progress:
  """Stdout progress lines with steps/s and ETA, measured since the first step."""

  def __init__(self, first_step: int, total_steps: int):
    self._total = total_steps
    self._t0 = None
    self._s0 = first_step

  def start(self, step: int) -> None:
    """Call after the first (compiling) step so rates exclude compilation."""
    self._t0, self._s0 = time.perf_counter(), step

  def report(self, step: int, scalars: dict[str, float]) -> None:
    text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    if self._t0 is None or step <= self._s0:
      console(f"step {step}/{self._total} {text}")
      return
    rate = (step - self._s0) / (time.perf_counter() - self._t0)
    eta = (self._total - step) / rate
    console(f"step {step}/{self._total} {text} | {rate:.1f} steps/s, "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl`, in step order.

  A resumed run recomputes the steps after its checkpoint; their newest
  record (split, step) wins, so a resumed history reads as one run.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  latest = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        record = json.loads(line)
        latest[(record["split"], record["step"])] = record
  return sorted(latest.values(), key=lambda r: (r["step"], r["split"]))
