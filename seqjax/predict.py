"""Predicts with a trained run: `python -m seqjax.predict --workdir=RUN --input=X --output=Y`.

Inputs as training read them (`.npy`, `.npz` with `x`, or `.csv`: one sequence
a row; a column named as the training file's label column is dropped; a
forecast run's CSV may be long format with its time column). Outputs `.npy` or
`.csv`, in the input's order, one row a sequence: the label (classification),
the K targets (regression) or the next H steps (forecast; H x F values a row).
`--proba`: a classifier's class probabilities instead, a column a class. A
forecast from a long CSV is written long too: one row a forecast step, its time
column continued past the last time at the series' own step.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from seqjax.config import cli, validate
from seqjax.data import calendar, readers
from seqjax.data.tasks import data as data_task
from seqjax.runtime import files
from seqjax.train import inference

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run's directory (seqjax.main's --workdir).")
flags.DEFINE_string("input", None, "Sequences to predict: .npy, .npz or .csv.")
flags.DEFINE_string("output", None, "Where predictions go: .npy or .csv.")
flags.DEFINE_boolean("proba", False, "classification: write each class's probability (a "
                     "column a class, named as the training labels) instead of the label.")
flags.mark_flags_as_required(["workdir", "input", "output"])


def read_inputs(run: inference.TrainedRun,
                path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(x [N, T, F] NaN-padded, lengths [N], a long CSV's times [T] or None) from `path`,
  checked against the run."""
  info = run.info or {}
  forecast = info.get("kind") == "forecast"
  time_column = run.config.task.get("time_column", "") if forecast else ""
  arrays = readers.read(path, "--input", series=forecast, label=info.get("label") or "",
                          time_column=time_column, inputs_only=True,
                          csv_label=info.get("csv_label"))
  if arrays.x.shape[2] != run.features:
    readers.error(path, "--input", f"the sequences have {arrays.x.shape[2]} features a "
                    f"step; the run was trained on {run.features}")
  if not forecast or time_column:  # a wide forecast CSV's columns are time steps: any number
    readers.check_columns(path, "--input", arrays.columns, info.get("columns"))
  if info and not forecast and (why := data_task.check_steps(arrays.x.shape[1], info, "the file")):
    readers.error(path, "--input", why)
  return arrays.x, arrays.lengths, arrays.times


def check_output(path: str) -> None:
  """A ConfigError, before any work, unless `path`'s folder exists and takes a new file."""
  if not files.is_local(path):
    return  # an object store: its folders need not exist, and writes say why they fail
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise validate.ConfigError(f"--output={path!r}: the folder {folder!r} does not exist")
  if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise validate.ConfigError(f"--output={path!r}: not writable here (permission denied)")


def feature_names(run: inference.TrainedRun, count: int) -> list[str]:
  return (run.info or {}).get("features") or [f"f{i}" for i in range(count)]


def header(run: inference.TrainedRun, preds: np.ndarray, proba: bool = False) -> list[str]:
  info = run.info or {}
  kind = info.get("kind")
  if kind == "classification":
    return [str(c) for c in info["classes"]] if proba else [info.get("label") or "label"]
  if kind == "forecast":
    names = feature_names(run, preds.shape[-1])
    return [f"{n}@{h}" for h in range(1, preds.shape[1] + 1) for n in names]
  return [f"y{i}" for i in range(int(np.prod(preds.shape[1:])))]


def forecast_rows(run: inference.TrainedRun, preds: np.ndarray,
                  times: np.ndarray) -> tuple[list[str], list[list]] | None:
  """A long CSV's forecast [1, H, F] as (header, H rows of its time and F values), the
  times continued past `times` [T]; None when they cannot be (fewer than two times)."""
  ahead = calendar.continue_times(times, preds.shape[1])
  if ahead is None or len(preds) != 1:
    return None
  names = feature_names(run, preds.shape[-1])
  rows = [[t, *values] for t, values in zip(calendar.format_times(ahead, times),
                                            preds[0].tolist(), strict=True)]
  return [run.config.task.time_column, *names], rows


def main(argv):
  del argv  # no positional arguments (cli.run refuses them)
  if not FLAGS.output.lower().endswith((".npy", ".csv")):
    raise validate.ConfigError(f"--output={FLAGS.output!r}: unknown extension; allowed: "
                               ".npy, .csv")
  check_output(FLAGS.output)
  run = inference.load(FLAGS.workdir)
  if FLAGS.proba and run.kind != "classification":
    raise validate.ConfigError(f"--proba: class probabilities need a classification run; "
                               f"this run is a {run.kind}")
  x, lengths, times = read_inputs(run, FLAGS.input)
  preds = run.predict_proba(x, lengths) if FLAGS.proba else run.predict(x, lengths)
  long = None
  if run.kind == "forecast" and times is not None and FLAGS.output.lower().endswith(".csv"):
    long = forecast_rows(run, preds, times)
  try:
    if long is not None:
      readers.write_rows(FLAGS.output, *long)
    else:
      readers.write(FLAGS.output, preds, header(run, preds, FLAGS.proba))
  except OSError as e:  # the folder went away, or the disk is full
    raise validate.ConfigError(f"--output={FLAGS.output!r}: could not be written "
                               f"({type(e).__name__}: {e.strerror or e})") from None
  who = (" of the population's ensemble" if run.ensemble else
         f" of the population's member {run.member}" if run.member is not None else "")
  what = "class probabilities" if FLAGS.proba else "predictions"
  print(f"{len(preds)} {what} ({run.kind}, parameters of step {run.step}{who}) -> "
        f"{FLAGS.output}", flush=True)


if __name__ == "__main__":
  cli.run(main)
