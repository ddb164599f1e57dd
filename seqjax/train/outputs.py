"""What a run leaves in its workdir when it ends: results.json, timing.json and plots.

`results.json` holds only what the run computed (bit-identical across
reruns); times go to `timing.json`. Only the writer process writes.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from typing import Any

import jax
import numpy as np

from seqjax.data.tasks import base
from seqjax.runtime import files, sharding, writers


def import_plots_in_background() -> None:
  """Imports matplotlib (slow to import) in a thread, while XLA compiles without the GIL.

  Not a daemon: an exit waits for it rather than cut it.
  """
  threading.Thread(target=importlib.import_module, args=("seqjax.runtime.plots",),
                   name="import-plots").start()


def timing(t_start: float, compile_s: float | None, mesh: jax.sharding.Mesh,
           **extra) -> dict[str, Any]:
  """Wall time since `t_start`, the first step's time, and where the run ran."""
  return {**extra, "compile_s": compile_s, "wall_s": time.perf_counter() - t_start,
          "platform": jax.default_backend(), "devices": mesh.size, "mesh": dict(mesh.shape),
          "processes": jax.process_count()}


def write(workdir: str, results: dict[str, Any], timing_: dict[str, Any]) -> None:
  """`results.json` and `timing.json` (writer process only)."""
  if sharding.is_writer():
    for name, content in (("results.json", results), ("timing.json", timing_)):
      files.write_json(os.path.join(workdir, name), content)


def plot(workdir: str, task: base.Task, eval_set: base.Batch, preds: np.ndarray) -> None:
  """`loss.png` from the metrics so far, and the task's own picture of its predictions."""
  if not sharding.is_writer():
    return
  from seqjax.runtime import plots
  plots.loss_curves(writers.read_metrics(workdir), os.path.join(workdir, "loss.png"),
                    task.metric)
  task.plot(eval_set, preds, workdir)


def summary(results: dict[str, Any], timing_: dict[str, Any]) -> None:
  """The run's last lines on the console."""
  shown = {k: v for k, v in results.items() if k not in ("members", "history")}  # one line
  writers.console("results: " + json.dumps(shown))
  writers.console(f"time: {timing_['wall_s']:.1f} s (first step, compile included: "
                  f"{timing_['compile_s'] or 0:.1f} s)")
