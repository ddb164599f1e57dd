"""data: the user's own sequences from a file (see configs/data.py and seqjax.data.readers).

Three kinds (`task.kind`):
  classification  x [N, T, F] -> one integer label a sequence (head "last");
  regression      x [N, T, F] -> K numbers a sequence (head "last");
  forecast        series [S, T, F] -> the next `horizon` steps from a `window`
                  of past steps (head "per_step", trained as sine is: teacher
                  forced over the window, then free-running over the horizon).

Splits: a test file (`task.test`) or a seeded split of the sequences; series
are split by time (the last `test_fraction` of each series is its test part,
the `validation_fraction` before it its validation part), never shuffled
across time. Inputs (and regression targets) are normalised with statistics
of the training split alone; they are saved in the run's `data.json`, which
`seqjax.load` reads to undo them.

The training split stays on the host: batches are gathered there and fed to
the device (`seqjax.data.feed`), so the compiled program does not grow with the file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax.config import validate
from seqjax.data import baselines as baselines_lib
from seqjax.data import feed as feed_lib
from seqjax.data import folds, readers
from seqjax.data.tasks import base
from seqjax.runtime import files, writers

KINDS = ("classification", "regression", "forecast")
# How sequences are normalised: by the training set's mean and std per feature; each by
# its own (a class that is a shape at any level and amplitude); both, side by side (the
# shape and the level); or "auto": both, unless every training sequence is z-normalised
# already (the two would read the same values twice).
NORMALIZE = ("dataset", "series", "both", "auto")
INFO_FILE = "data.json"
# Cross-validation folds at most (`task.folds`): each needs its own member to validate on it.
MAX_FOLDS = 64

# A forecast's window when task.window is 0 (`auto_window`).
PREFERRED_WINDOW = 48
MIN_TRAIN_WINDOWS = 16
# Calendar steps: (name, seconds, the season they imply in steps).
CALENDAR_SEASONS = (("hourly", 3600, 24), ("daily", 86400, 7), ("weekly", 7 * 86400, 52),
                    ("monthly", 30.44 * 86400, 12), ("quarterly", 91.31 * 86400, 4))


@dataclasses.dataclass(frozen=True)
class Examples:
  """Host arrays from which batches are gathered by example index.

  Sequence kinds: `arrays` are per example ({x, y, weight[, mask][, fold]}), and
  `gather(idx)` takes rows. Forecast: `arrays` are the normalised series `z`
  [S, T, F] and the raw series `s`, and example i is the window of W + H steps
  starting at `starts[i]` of series `series[i]`; with `relative`, its inputs
  are taken from its `level` [B, 1, F] (the last input value), and the model's
  outputs are values relative to it too: predictions are outputs + level.
  """
  arrays: dict[str, np.ndarray]
  size: int
  series: np.ndarray | None = None
  starts: np.ndarray | None = None
  window: int = 0  # forecast: W input steps
  horizon: int = 0  # forecast: H steps forecast
  eval_weight: bool = False  # forecast: weight only the horizon (held-out sets)
  # forecast: inputs and outputs relative to the window's last input value (its level).
  relative: bool = False

  def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The examples `idx` [B] as a batch (numpy)."""
    if self.series is None:
      return {k: v[idx] for k, v in self.arrays.items()}
    targets = self._targets(idx)
    return {"x": self._windows("z", idx)[:, :self.window] - targets["level"], **targets}

  def _windows(self, name: str, idx: np.ndarray) -> np.ndarray:
    """Forecast windows `idx` [B] of the series `arrays[name]`: [B, W + H, F]."""
    rows = self.series[idx][:, None]
    cols = self.starts[idx][:, None] + np.arange(self.window + self.horizon)[None, :]
    return self.arrays[name][rows, cols]

  def _targets(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    # Forecast targets: the next value at each of the W input steps, then H - 1
    # more; the forecasts proper are the last H of them.
    w, h = self.window, self.horizon
    weight = np.ones((len(idx), w + h - 1), np.float32)
    if self.eval_weight:
      weight[:, :w - 1] = 0.0
    level = self.arrays["z"][self.series[idx], self.starts[idx] + w - 1][:, None]  # [B, 1, F]
    return {"y": self._windows("s", idx)[:, 1:], "weight": weight,
            "level": level if self.relative else np.zeros_like(level)}

  def all(self) -> dict[str, np.ndarray]:
    return self.gather(np.arange(self.size))

  def targets(self) -> dict[str, np.ndarray]:
    """The targets and weights of every example (what metrics read), without the inputs."""
    if self.series is None:
      return {k: self.arrays[k] for k in ("y", "weight", "fold") if k in self.arrays}
    return self._targets(np.arange(self.size))


@dataclasses.dataclass(frozen=True)
class DataTask(base.Task):
  """A task whose data comes from files, fed from the host.

  Attributes:
    kind: one of `KINDS`.
    info: what predicting needs (kind, shapes, classes, normalisation, ...),
      JSON-ready; written to `workdir/data.json`.
    train_examples, validation, test: the splits (`Examples`).
    test_raw: the test split as `seqjax.load(...).evaluate` takes it:
      (x [N, T, F] with NaN padding, y, lengths) for sequences, (x [N, W, F],
      truth [N, H, F]) in the file's units for forecasts.
    baselines: `() -> {name: predictions [N, ...] on the test split}`, in the
      model's output units, judged by the task's own metrics
      (`seqjax.data.baselines`), or a `baselines.Skipped` in place of a
      baseline too large to compute; computed when called, since the
      nearest-neighbour ones take seconds.
    times: a forecast's time column [T] (numbers or dates; of a long CSV), else None.
  """
  kind: str = "classification"
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  train_examples: Examples | None = None
  validation: Examples | None = None
  test: Examples | None = None
  test_raw: tuple[np.ndarray, ...] = ()
  batch_size: int = 32  # of the training batches (`train_batch` gives their shapes)
  times: np.ndarray | None = None

  @property
  def outputs(self) -> str:
    info = self.info
    if self.kind == "classification":
      return f"{info['out_features']} classes"
    if self.kind == "regression":
      n = info["out_features"]
      return f"{n} target{'s' if n > 1 else ''}"
    return f"the next {info['horizon']} steps"

  @property
  def selection(self) -> tuple[str, bool]:
    # Accuracy ties often; the cross-entropy tells the better of two tied steps apart.
    return ("xent", False) if self.kind == "classification" else (self.metric, False)

  def feed(self, batch_size: int, seed: int, mesh, steps: int) -> feed_lib.Feed:
    """The training split's batches, sent from the host a chunk at a time (Keras `fit`
    order from `seed`), at most `steps` a chunk (the most one call of the train loop runs)."""
    return feed_lib.Feed(self.train_examples, batch_size, seed, mesh, steps)

  def held_out(self, sets):
    """The validation and test splits, evaluated batch by batch from the host."""
    return sets.from_host(self.validation, self.test)

  def train_batch(self, key: jax.Array, step: jax.Array) -> base.Batch:
    """A batch of the training split's shapes (zeros): for shapes and init only."""
    del key, step
    sample = self.train_examples.gather(np.zeros((self.batch_size,), np.int64))
    return {k: jnp.zeros(v.shape, v.dtype) for k, v in sample.items()}

  def save(self, workdir: str) -> None:
    """`workdir/data.json`: the kind, shapes, classes and normalisation (`seqjax.load`)."""
    files.write_json(os.path.join(workdir, INFO_FILE), self.info)

  def check_resume(self, workdir: str) -> None:
    """A run resumes only on the files it started with (their checksums in data.json)."""
    path = files.path(workdir) / INFO_FILE
    if not path.exists():
      return
    try:
      before = files.read_json(path).get("sources") or {}
    except (ValueError, AttributeError):  # unreadable: the run rewrites it
      return
    for field, digest in self.info.get("sources", {}).items():
      if field in before and before[field] != digest:
        validate.fail(f"task.{field}", self.info["files"][field], "the file is not the one "
                      f"the run in --workdir={workdir!r} trained on (its checksum in "
                      f"{INFO_FILE} differs); use a new --workdir for new data")

  def plot(self, eval_set, preds: np.ndarray, workdir: str) -> None:
    from seqjax.runtime import plots  # matplotlib: imported when first drawing
    if self.kind == "classification":
      plots.confusion(np.asarray(eval_set["y"]), np.asarray(preds).argmax(-1),
                      [str(c) for c in self.info["classes"]],
                      os.path.join(workdir, "confusion.png"))
    elif self.kind == "regression":
      scale, shift = (np.asarray(self.info[k], np.float32) for k in ("y_scale", "y_shift"))
      true = np.asarray(eval_set["y"]).reshape(len(preds), -1)
      k = true.shape[1]
      names = [self.info["label"]] if k == 1 else [f"{self.info['label']}[{j}]"
                                                   for j in range(k)]
      plots.targets_vs_predicted(true, np.asarray(preds) * scale + shift, names,
                                 os.path.join(workdir, "predictions.png"))
    elif self.kind == "forecast":
      h, level = self.info["horizon"], np.asarray(eval_set["level"])
      truth = np.asarray(eval_set["y"])[:, -h:]  # [N, H, F], the file's units
      forecast = to_units(np.asarray(preds)[:, -h:] + level, self.info)
      naive = {name: to_units(p[:, -h:] + level, self.info)
               for name, p in self.baselines().items()
               if not isinstance(p, baselines_lib.Skipped)}
      errors = {name: np.abs(p - truth) for name, p in naive.items()}
      best = min(errors, key=lambda name: errors[name].mean())
      test = self.test
      plots.forecast(test.arrays["s"][test.series[0]], self.times, test.series,
                     test.starts + self.info["window"], forecast, naive[best],
                     np.abs(forecast - truth), errors[best], best, self._feature_names(),
                     os.path.join(workdir, "forecast.png"))

  def _feature_names(self) -> list[str]:
    """A forecast's features, as its picture names them."""
    if self.info.get("features"):
      return list(self.info["features"])
    f = self.info["in_features"]
    return ["value"] if f == 1 else [f"feature {j}" for j in range(f)]


def _fractions(cfg):
  validate.in_range("task.test_fraction", cfg.test_fraction, 0.0, 0.9)
  validate.in_range("task.validation_fraction", cfg.validation_fraction, 0.0, 0.9)
  if cfg.test_fraction + cfg.validation_fraction >= 0.95:
    validate.fail("task.validation_fraction", cfg.validation_fraction,
                  f"with task.test_fraction={cfg.test_fraction} leaves no training data")


# Sequences processed at a time: a large file's temporaries stay a fraction of it.
CHUNK = 4096


def _parts(rows: np.ndarray):
  return (rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK))


def _valid_steps(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The valid steps of x [n, T, F] as [steps, F]."""
  return x[np.arange(x.shape[1])[None, :] < lengths[:, None]]


def normalizer(x: np.ndarray, lengths: np.ndarray,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature (mean [F], std [F]) over the valid steps of the sequences `rows` of
  x [N, T, F] (all when None), in float64, a chunk of sequences at a time."""
  rows = np.arange(len(x)) if rows is None else rows
  count, total = 0, np.zeros(x.shape[2])
  for part in _parts(rows):
    values = _valid_steps(x[part], lengths[part])
    count, total = count + len(values), total + values.sum(0, dtype=np.float64)
  mean = total / max(count, 1)
  squares = np.zeros(x.shape[2])
  for part in _parts(rows):
    squares += ((_valid_steps(x[part], lengths[part]) - mean) ** 2).sum(0)
  std = np.sqrt(squares / max(count, 1))
  return mean, np.where(std > 1e-8, std, 1.0)


def z_normalised(x: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> bool:
  """Whether each sequence `rows` of x [N, T, F] has mean 0 and std 1 per feature over
  its valid steps already (as the UCR archive distributes its series)."""
  for part in _parts(rows):
    mean, std = baselines_lib.series_stats(x[part], lengths[part])
    if np.abs(mean).max() > 1e-2 or np.abs(std - 1).max() > 1e-2:
      return False
  return True


def normalize(x: np.ndarray, lengths: np.ndarray, shift, scale,
              rows: np.ndarray | None = None, by: str = "dataset") -> np.ndarray:
  """The sequences `rows` of x [N, T, F] (all when None) normalised `by` one of NORMALIZE,
  zeros after each sequence's end; float32 [len(rows), T, F], or [len(rows), T, 2F] by
  "both".

  "dataset": (x - shift) / scale; "series": each sequence z-normalised by its own mean
  and std per feature; "both": the two side by side.
  """
  rows = np.arange(len(x)) if rows is None else rows
  shift, scale = np.asarray(shift, np.float32), np.asarray(scale, np.float32)
  features = x.shape[2] * (2 if by == "both" else 1)
  out = np.empty((len(rows), x.shape[1], features), np.float32)
  done = 0
  for part in _parts(rows):
    valid = np.arange(x.shape[1])[None, :, None] < lengths[part][:, None, None]
    values = []
    if by in ("dataset", "both"):
      values.append(np.where(valid, (x[part] - shift) / scale, 0.0))
    if by in ("series", "both"):
      values.append(baselines_lib.z_normalise(x[part], lengths[part]))
    out[done:done + len(part)] = np.concatenate(values, axis=2) if len(values) > 1 else values[0]
    done += len(part)
  return out


def sequence_inputs(x: np.ndarray, lengths: np.ndarray, info: dict[str, Any],
                    rows: np.ndarray | None = None) -> dict:
  """The model's inputs for the sequences `rows` of x [N, T, F] (all when None):
  normalised x, and a mask where the run trained with one or these sequences are padded."""
  rows = np.arange(len(x)) if rows is None else rows
  out = {"x": normalize(x, lengths, info["x_shift"], info["x_scale"], rows,
                       info.get("normalize", "dataset"))}
  if info["masked"] or (lengths[rows] < x.shape[1]).any():
    out["mask"] = np.arange(x.shape[1])[None, :] < lengths[rows][:, None]
  return out


def check_steps(steps: int, info: dict[str, Any], what: str) -> str | None:
  """Why sequences of `steps` steps do not fit a run trained on sequences of one length
  (`info["steps"]`), or None when they fit (any length fits a run trained on several)."""
  trained = info.get("steps")
  if not info.get("fixed_length") or steps == trained:
    return None
  return (f"{what} has sequences of {steps} steps; the run was trained on sequences of "
          f"exactly {trained} (a CSV row holds the steps, then the label column if the "
          "training file had one)")


def sequence_examples(x: np.ndarray, lengths: np.ndarray, y: np.ndarray, info: dict[str, Any],
                      rows: np.ndarray | None = None) -> Examples:
  """The examples of the sequences `rows` (all when None) of x [N, T, F] with their
  targets y [len(rows), ...] (label indices or raw targets): what training, evaluation
  and prediction read.
  """
  rows = np.arange(len(x)) if rows is None else rows
  arrays = sequence_inputs(x, lengths, info, rows)
  return Examples({**arrays, "y": y, "weight": np.ones((len(rows),), np.float32)}, len(rows))


def series_arrays(x: np.ndarray, lengths: np.ndarray, info: dict[str, Any]) -> dict:
  """Forecast series x [S, T, F] (NaN past `lengths`) as examples read them: normalised
  in the model's frame (`z`) and raw (`s`)."""
  return {"z": normalize(model_values(x, info), lengths, info["x_shift"], info["x_scale"]),
          "s": np.nan_to_num(x)}


def model_values(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
  """A forecast's values in the frame the model learns in, before normalising: their log
  with `task.log`, else themselves."""
  return np.log(x) if info.get("log") else x


def to_units(z: np.ndarray, info: dict[str, Any]) -> np.ndarray:
  """Normalised forecast values `z` [..., F] back in the file's units."""
  values = z * np.asarray(info["x_scale"], np.float32) + np.asarray(info["x_shift"], np.float32)
  return np.exp(values) if info.get("log") else values


def forecast_examples(arrays: dict, windows: tuple[np.ndarray, np.ndarray],
                      info: dict[str, Any], eval_weight: bool) -> Examples:
  """The forecast examples `windows` = (series, start) of `series_arrays` arrays:
  task.window input steps, then task.horizon steps to forecast."""
  return Examples(arrays, len(windows[0]), series=windows[0], starts=windows[1],
                  window=info["window"], horizon=info["horizon"], eval_weight=eval_weight,
                  relative=info.get("relative", False))


def class_indices(path: str, field: str, y: np.ndarray, classes: np.ndarray | None,
                  column: str | None = None):
  """Labels y [N] (integers or names; from a CSV's `column`) -> indices into `classes`
  (the sorted training labels)."""
  if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
    readers.error(path, field, f"classification labels must be [N]; got shape {y.shape}")
  y = y.reshape(-1)
  named = y.dtype.kind == "U"  # class names (a .ts file's labels)
  if not named and not (np.issubdtype(y.dtype, np.integer)
          or (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y))
              and np.all(y == np.round(y)))):
    bad = y[~(np.isfinite(y) & (y == np.round(y)))][0] if y.dtype.kind == "f" else y[0]
    where = f" in column {column!r}" if column else ""
    other = "if the labels are in another column, set task.label=NAME; " if column else ""
    readers.error(path, field, f"classification needs integer labels; found {bad.item()!r}"
                    f"{where} ({other}if these numbers are targets, set task.kind=regression)")
  y = y if named else y.astype(np.int64)
  if classes is None:
    classes = np.unique(y)
    if len(classes) < 2:
      readers.error(path, field, f"every label is {classes[0].item()!r}: classification "
                      "needs at least two classes")
  unknown = ~np.isin(y, classes)
  if unknown.any():
    readers.error(path, field, f"label {y[unknown][0].item()!r} is not among the training "
                    f"labels {classes.tolist()}")
  return np.searchsorted(classes, y).astype(np.int32), classes


def split(n: int, cfg, has_test: bool, labels: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Seeded (train, validation, test) indices of n sequences; with class `labels` [N],
  stratified: each split holds every class in about its share of the whole."""
  order = np.random.default_rng(cfg.split_seed).permutation(n)
  if labels is not None:
    # Each example's rank within its class, as a fraction of the class: sorting by it
    # deals the classes out in proportion (the seeded order breaks the ties).
    y = labels[order]
    counts = np.bincount(y)
    rank = np.empty(n)
    for c in np.flatnonzero(counts):
      rank[y == c] = (np.arange(counts[c]) + 0.5) / counts[c]
    order = order[np.argsort(rank, kind="stable")]
  n_test = 0 if has_test else int(round(n * cfg.test_fraction))
  n_val = int(round(n * cfg.validation_fraction))
  return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _sequence_task(cfg, batch_size, arrays, test_arrays):
  kind, path = cfg.kind, cfg.train
  for a, p, field in ((arrays, path, "task.train"), (test_arrays, cfg.test, "task.test")):
    if a is not None and a.y is None:
      readers.error(p, field, f"{kind} needs labels: a y array in the .npz, or a label "
                      "column in the .csv")
    if a is not None and kind == "regression" and (
        not np.issubdtype(a.y.dtype, np.number) or not np.isfinite(a.y).all()):
      readers.error(p, field, f"regression targets must be finite numbers (y has dtype "
                      f"{a.y.dtype})")
    if a is not None and kind == "regression":
      readers.in_range(p, field, a.y.reshape(len(a.y), -1), "y", limit=readers.LARGEST)
  if arrays.label_by == "name":
    writers.console(f"{kind}: the labels are column {arrays.label!r} (named like a label "
                    "column; task.label=NAME reads another)")
  elif arrays.label_by == "last":
    writers.console(f"{kind}: the labels are the last column"
                    + (f", {arrays.label!r}" if arrays.label else "")
                    + " (task.label=NAME reads another)")
  labels = classes = None
  if kind == "classification":  # labels checked first: a bad label column is the likelier cause
    labels, classes = class_indices(path, "task.train", arrays.y, None, arrays.label)
  idx_train, idx_val, idx_test = split(len(arrays.x), cfg, test_arrays is not None, labels)
  if len(idx_train) < 2 or not len(idx_val) or (test_arrays is None and not len(idx_test)):
    readers.error(path, "task.train", f"{len(arrays.x)} sequences are too few to split "
                    "into training, validation and test sets")
  # With folds every labelled sequence trains most members and validates one (when the
  # population has at least task.folds members; member m takes fold m % task.folds).
  n_folds = cfg.get("folds", 0)  # a run saved before the option has none
  labelled = np.concatenate([idx_val, idx_train])
  if n_folds and len(labelled) < 2 * n_folds:
    readers.error(path, "task.train", f"{len(labelled)} labelled sequences are too few "
                  f"for task.folds={n_folds} (at least 2 a fold); task.folds=0 holds out "
                  "a validation split instead")
  fit_rows = labelled if n_folds else idx_train  # what trains some member
  normalize_by = cfg.get("normalize", "dataset")  # a run saved before the option has none
  validate.one_of("task.normalize", normalize_by, NORMALIZE)
  if normalize_by == "auto":
    normalize_by = "dataset" if z_normalised(arrays.x, arrays.lengths, fit_rows) else "both"
    writers.console(f"{kind}: task.normalize=auto chose {normalize_by!r} ("
                    + ("every training sequence is z-normalised already)"
                       if normalize_by == "dataset" else "the training set's mean and std "
                       "beside each sequence's own: its shape and its level)"))
  x_shift, x_scale = normalizer(arrays.x, arrays.lengths, fit_rows)
  masked = any((a.lengths < a.x.shape[1]).any() for a in (arrays, test_arrays) if a is not None)
  info = {"kind": kind, "in_features": arrays.x.shape[2], "masked": masked,
          "steps": arrays.x.shape[1], "x_shift": x_shift.tolist(),
          # Every sequence, training and test, of one length: predict takes that length only.
          "fixed_length": not masked and (test_arrays is None
                                          or test_arrays.x.shape[1] == arrays.x.shape[1]),
          "x_scale": x_scale.tolist(), "normalize": normalize_by,
          "model_features": arrays.x.shape[2] * (2 if normalize_by == "both" else 1),
          "label": arrays.label or "y", "csv_label": arrays.csv_label,
          "columns": arrays.columns, "folds": n_folds}
  if kind == "classification":
    y_all = labels
    info.update(classes=classes.tolist(), out_features=len(classes))
    test_y = (class_indices(cfg.test, "task.test", test_arrays.y, classes, test_arrays.label)[0]
              if test_arrays is not None else None)
  else:
    y_all = arrays.y.reshape(len(arrays.y), -1).astype(np.float32)
    y_shift, y_scale = y_all[fit_rows].mean(0), y_all[fit_rows].std(0)
    y_scale = np.where(y_scale > 1e-8, y_scale, 1.0)
    info.update(out_features=y_all.shape[1], y_shift=y_shift.tolist(),
                y_scale=y_scale.tolist())
    test_y = None
    if test_arrays is not None:
      test_y = test_arrays.y.reshape(len(test_arrays.y), -1).astype(np.float32)
      if test_y.shape[1] != y_all.shape[1]:
        readers.error(cfg.test, "task.test", f"y has {test_y.shape[1]} targets a sequence; "
                        f"the training file has {y_all.shape[1]}")

  def examples(a, rows, y):
    return sequence_examples(a.x, a.lengths, y, info, rows)

  train = examples(arrays, idx_train, y_all[idx_train])
  val = examples(arrays, idx_val, y_all[idx_val])
  split_train, split_val = train, val  # ridge's penalty is chosen on a split either way
  if n_folds:  # one set of every labelled sequence, for training and for validation
    train = examples(arrays, labelled, y_all[labelled])
    fold = folds.assign(len(labelled), n_folds, None if labels is None else labels[labelled])
    train = Examples({**train.arrays, "fold": fold}, train.size)
    val = train
  test = (examples(test_arrays, np.arange(len(test_arrays.x)), test_y)
          if test_arrays is not None else examples(arrays, idx_test, y_all[idx_test]))
  if test_arrays is None:
    raw = (arrays.x[idx_test], arrays.y[idx_test], arrays.lengths[idx_test])
  else:
    raw = (test_arrays.x, test_arrays.y, test_arrays.lengths)
  if kind == "classification":
    metric, higher = "accuracy", True
  else:
    metric, higher = "mae", False

  def baselines():
    rows = np.concatenate([idx_train, idx_val])  # every labelled series but the test's
    return _sequence_baselines(info, split_train, split_val, test,
                               (arrays.x[rows], arrays.lengths[rows]), raw)

  return info, train, val, test, raw, baselines, metric, higher, "last", 0, 0


def _sequence_baselines(info, train: Examples, val: Examples, test: Examples,
                        labelled: tuple[np.ndarray, np.ndarray], test_raw: tuple) -> dict:
  """The field's baselines on the test split (`seqjax.data.baselines`), in model units;
  a `baselines.Skipped` for a nearest-neighbour one over `NN_BUDGET`.

  `labelled`: (x, lengths) of the training then validation series, raw. The
  nearest neighbours are looked for among both (as the archive's 1-NN figures use
  the whole official training set); ridge fits the training split and chooses its
  penalty on validation.
  """
  n_test = test.size
  if info["kind"] == "classification":
    counts = np.bincount(train.arrays["y"], minlength=len(info["classes"]))
    prior = np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)
    out = {"majority_class": np.broadcast_to(prior, (n_test, len(prior))).copy()}
    x_fit, x_test = (baselines_lib.z_normalise(x, n) for x, n in (labelled, test_raw[::2]))
    y_fit = np.concatenate([train.arrays["y"], val.arrays["y"]])
    for distance in ("euclidean", "dtw"):
      scores = baselines_lib.nearest_neighbour(
          (x_test, test_raw[2]), (x_fit, labelled[1]), y_fit, len(info["classes"]),
          distance, budget=baselines_lib.NN_BUDGET)
      if isinstance(scores, baselines_lib.Skipped):
        writers.console(f"baseline 1nn_{distance} skipped: {scores.reason}")
      out[f"1nn_{distance}"] = scores
    return out
  # The model predicts normalised targets: the training mean is 0.
  shift, scale = (np.asarray(info[k], np.float32) for k in ("y_shift", "y_scale"))
  # Ridge reads the series normalised by the training set's statistics, whatever the
  # model reads.
  x, lengths = labelled
  x_shift, x_scale = normalizer(x, lengths, np.arange(train.size))
  steps = x.shape[1]
  flat = lambda x, n: _flat(normalize(x, n, x_shift, x_scale), steps)  # noqa: E731
  ridge, _ = baselines_lib.ridge(
      flat(x[:train.size], lengths[:train.size]), (train.arrays["y"] - shift) / scale,
      flat(x[train.size:], lengths[train.size:]), (val.arrays["y"] - shift) / scale,
      flat(test_raw[0], test_raw[2]))
  return {"train_mean": np.zeros((n_test, info["out_features"]), np.float32), "ridge": ridge}


def _flat(x: np.ndarray, steps: int) -> np.ndarray:
  """Normalised sequences x [N, T, F] cut or zero-padded to `steps`, as [N, steps * F]."""
  x = x[:, :steps]
  return np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0))).reshape(len(x), -1)


def loss_and_metrics(info: dict[str, Any]):
  """The task's `(preds, batch) -> (loss, metrics)` for a `data.json` info."""
  if info["kind"] == "classification":
    return base.classification_loss
  if info["kind"] == "regression":
    shift, scale = (np.asarray(info[k], np.float32) for k in ("y_shift", "y_scale"))
    return lambda p, b: base.regression_loss(p, b, shift, scale)
  shift, scale = (np.asarray(info[k], np.float32) for k in ("x_shift", "x_scale"))
  return lambda p, b: forecast_loss(p, b, shift, scale, info["horizon"],
                                    info.get("log", False))


def forecast_loss(preds, batch, shift, scale, horizon, log=False):
  """`regression_loss` over the weighted steps, plus the MAE at the last step (horizon H).

  `preds` are relative to each window's `batch["level"]` (zeros unless the run's
  windows are relative). With `log`, the model learns the normalised log of the
  values (`batch["y"]` are raw): the loss is in that frame, the metrics in the file's
  units."""
  preds = preds + batch["level"]
  y, weight = batch["y"], batch["weight"]
  if not log:
    loss, metrics = base.regression_loss(preds, batch, shift, scale)
    last = preds[:, -1] * scale + shift
  else:
    loss = base.weighted_mean((preds - (jnp.log(y) - shift) / scale) ** 2, weight)
    # Capped at the largest value a file may hold: a wild prediction's metric stays finite.
    units = lambda z: jnp.exp(jnp.minimum(z * scale + shift, np.log(readers.LARGEST)))  # noqa: E731
    err = units(preds) - y
    metrics = {"mse": base.weighted_mean(err**2, weight),
               "mae": base.weighted_mean(jnp.abs(err), weight)}
    last = units(preds[:, -1])
  metrics[f"mae@{horizon}"] = base.weighted_mean(jnp.abs(last - y[:, -1]), weight[:, -1])
  return loss, metrics


def _windows(lengths, first, last, step=1):
  """(series, start) of every window whose start lies in [first[s], last[s]] for each series s."""
  series, starts = [], []
  for s, (a, b) in enumerate(zip(first, last, strict=True)):
    if b >= a:
      st = np.arange(a, b + 1, step)
      series.append(np.full(len(st), s))
      starts.append(st)
  if not series:
    return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
  return np.concatenate(series), np.concatenate(starts)


def calendar_season(times: np.ndarray | None) -> tuple[int, str | None]:
  """(season in steps, the step's name) that a series' dates imply: hourly 24, daily 7,
  weekly 52, monthly 12, quarterly 4; (0, None) for numbered or other steps."""
  if times is None or times.dtype.kind != "M" or len(times) < 2:
    return 0, None
  step = float(np.median(np.diff(times).astype("timedelta64[s]").astype(np.float64)))
  for name, seconds, season in CALENDAR_SEASONS:
    if abs(step - seconds) <= 0.1 * seconds:
      return season, name
  return 0, None


def auto_window(train_steps: int, horizon: int, season: int) -> int:
  """The window a forecast reads when task.window is 0: PREFERRED_WINDOW steps (a season
  if that is longer), shortened until the longest training part holds MIN_TRAIN_WINDOWS
  windows, but never shorter than the season (the seasonal naive baseline reads one
  season back within the window)."""
  fits = train_steps - horizon + 1 - MIN_TRAIN_WINDOWS
  return max(min(max(PREFERRED_WINDOW, season), fits), season, 1)


def _forecast_task(cfg, batch_size, arrays, test_arrays):
  path = cfg.train
  validate.positive("task.horizon", cfg.horizon)
  validate.non_negative("task.window", cfg.window)
  validate.non_negative("task.season", cfg.season)
  if not isinstance(cfg.relative, bool):
    validate.fail("task.relative", cfg.relative, "must be True or False")
  if cfg.get("normalize", "dataset") not in ("dataset", "auto"):  # task.relative instead
    validate.fail("task.normalize", cfg.normalize, "must be 'dataset' or 'auto' for a "
                  "forecast (task.relative reads each window from its last value)")
  log = cfg.get("log", False)
  for a, p, field in ((arrays, path, "task.train"), (test_arrays, cfg.test, "task.test")):
    if a is not None:  # the series are the targets too
      readers.in_range(p, field, a.x, columns=a.features, column_axis=2, limit=readers.LARGEST)
    if log:
      _positive(a, p, field)
  if cfg.window and cfg.season > cfg.window:
    validate.fail("task.season", cfg.season, f"must be at most task.window={cfg.window} (the "
                  "seasonal-naive forecast reads one season back in the window)")
  h = cfg.horizon
  lengths = arrays.lengths
  longest = int(lengths.max())
  if h >= longest:
    readers.error(path, "task.train", f"task.horizon={h} steps is as long as the longest "
                    f"series ({longest} steps)")
  # Each held-out part holds at least one horizon (a short series' 10% would hold none).
  part = lambda fraction: np.where(fraction > 0, np.maximum(  # noqa: E731
      np.floor(lengths * fraction).astype(int), h), 0)
  if test_arrays is None:
    n_test, n_val = part(cfg.test_fraction), part(cfg.validation_fraction)
    train_end = lengths - n_test - n_val
  else:
    n_test, n_val = np.zeros_like(lengths), part(cfg.validation_fraction)
    train_end = lengths - n_val
  season, calendar = (cfg.season, None) if cfg.season else calendar_season(arrays.times)
  if calendar and not cfg.window and season + h > int(train_end.max()):
    season, calendar = 0, None  # a season from the dates that leaves no training window
  w = cfg.window or auto_window(int(train_end.max()), h, season)
  if season > w:  # a season from the dates, longer than the window asked for
    season, calendar = 0, None
  if cfg.window and w + h > longest:
    readers.error(path, "task.train", f"task.window={w} plus task.horizon={h} steps is longer "
                    f"than the longest series ({longest} steps); task.window=0 chooses one "
                    "that fits")
  if not cfg.window or calendar:
    writers.console(f"forecast: task.window={w}{'' if cfg.window else ' (from the series)'}, "
                    f"task.horizon={h}, task.season={season}"
                    + (f" (from the time column's {calendar} steps)" if calendar else ""))
  # Train windows lie inside the training part; a held-out window's input may reach
  # back into the earlier parts, its forecast only into its own part.
  tr = _windows(lengths, np.zeros_like(lengths), train_end - w - h)
  va = _windows(lengths, np.maximum(train_end - w, 0), train_end + n_val - w - h)
  if test_arrays is None:
    te = _windows(lengths, np.maximum(train_end + n_val - w, 0), lengths - w - h)
  if not len(tr[0]) or not len(va[0]) or (test_arrays is None and not len(te[0])):
    readers.error(path, "task.train", f"the series are too short for task.window={w} and "
                    f"task.horizon={h} in each of the training, validation and test parts "
                    f"(fractions {1 - cfg.test_fraction - cfg.validation_fraction:.2f}/"
                    f"{cfg.validation_fraction}/{cfg.test_fraction} of {longest} steps); "
                    "a shorter task.horizon fits more")
  train_valid = np.minimum(lengths, np.maximum(train_end, 0))
  shift, scale = normalizer(np.log(arrays.x) if log else arrays.x, train_valid)
  f = arrays.x.shape[2]
  info = {"kind": "forecast", "in_features": f, "out_features": f, "masked": False,
          "x_shift": shift.tolist(), "x_scale": scale.tolist(), "window": w, "horizon": h,
          "season": season, "relative": bool(cfg.relative), "log": log,
          "features": arrays.features, "label": "value", "columns": arrays.columns}

  def series(a):  # the raw and normalised series, shared by the splits that read them
    return series_arrays(a.x, a.lengths, info)

  def examples(arrays_, windows, eval_weight):
    return forecast_examples(arrays_, windows, info, eval_weight)

  own = series(arrays)
  train, val = examples(own, tr, False), examples(own, va, True)
  if test_arrays is not None:
    if test_arrays.x.shape[2] != f:
      readers.error(cfg.test, "task.test", f"the series have {test_arrays.x.shape[2]} "
                      f"features; the training file has {f}")
    te = _windows(test_arrays.lengths, np.zeros_like(test_arrays.lengths),
                  test_arrays.lengths - w - h)
    if not len(te[0]):
      readers.error(cfg.test, "task.test", f"no series is as long as task.window={w} plus "
                      f"task.horizon={h} steps")
    test = examples(series(test_arrays), te, True)
  else:
    test = examples(own, te, True)

  def baselines():
    held = test.all()
    z_in = held["x"] + held["level"]  # [N, W, F], normalised
    persistence = np.repeat(z_in[:, -1:], w + h - 1, axis=1)
    out = {"persistence": persistence}
    if season:
      steps = np.arange(1, h + 1)
      back = w + steps - 1 - season * np.ceil(steps / season).astype(int)  # into the window
      seasonal = persistence.copy()
      seasonal[:, w - 1:] = z_in[:, back]
      out["seasonal_naive"] = seasonal
    drift = persistence.copy()
    drift[:, w - 1:] = baselines_lib.drift(z_in, h)
    out["drift"] = drift
    return {k: v - held["level"] for k, v in out.items()}  # the model's units

  raw_windows = test.gather(np.arange(test.size))
  raw = (raw_windows["y"][:, :w - 1], raw_windows["y"][:, w - 1:])  # raw x[1:W], truth [N, H]
  first = (test.arrays["s"][test.series, test.starts])[:, None]  # raw x[0]
  raw = (np.concatenate([first, raw[0]], axis=1), raw[1])
  return info, train, val, test, raw, baselines, "mae", False, "per_step", h - 1, h - 1


def _positive(arrays: readers.Arrays | None, path: str, field: str) -> None:
  """ConfigError unless every value of the series is above zero (`task.log`)."""
  if arrays is None:
    return
  valid = np.arange(arrays.x.shape[1])[None, :] < arrays.lengths[:, None]
  bad = valid[..., None] & ~(arrays.x > 0)
  if bad.any():
    s, t, f = (int(i[0]) for i in np.nonzero(bad))
    name = arrays.features[f] if arrays.features else f"feature {f}"
    readers.error(path, field, f"task.log=True takes the log of every value, and {name} is "
                    f"{arrays.x[s, t, f]:g} at step {t} of series {s}; values must be above 0")


def read_files(cfg) -> tuple[readers.Arrays, readers.Arrays | None]:
  """The training file and the test file (or None), as `cfg` (config.task) names them."""
  validate.one_of("task.kind", cfg.kind, KINDS)
  series = cfg.kind == "forecast"
  read = lambda path, field: readers.read(path, field, series=series, label=cfg.label,
                                            time_column=cfg.time_column)
  arrays = read(cfg.train, "task.train")
  test = read(cfg.test, "task.test") if cfg.test else None
  if test is not None and test.x.shape[2] != arrays.x.shape[2]:
    readers.error(cfg.test, "task.test", f"sequences have {test.x.shape[2]} features; the "
                    f"training file has {arrays.x.shape[2]}")
  if test is not None:
    readers.check_columns(cfg.test, "task.test", test.columns, arrays.columns)
  return arrays, test


def make(cfg: ml_collections.ConfigDict, batch_size: int) -> DataTask:
  """Reads and splits the files `config.task` names (fields: see configs/data.py)."""
  validate.one_of("task.kind", cfg.kind, KINDS)
  log = cfg.get("log", False)  # a run saved before the option has none
  if not isinstance(log, bool):
    validate.fail("task.log", log, "must be True or False")
  if log and cfg.kind != "forecast":
    validate.fail("task.log", log, "applies to forecasts (task.kind='forecast')")
  _fractions(cfg)
  validate.integer_in("task.split_seed", cfg.split_seed, 0, 2**32 - 1)
  n_folds = cfg.get("folds", 0)  # a run saved before the option has none
  validate.integer_in("task.folds", n_folds, 0, MAX_FOLDS)
  if n_folds == 1:
    validate.fail("task.folds", n_folds, "must be 0 (a validation split) or from 2 to "
                  f"{MAX_FOLDS} (cross-validation folds)")
  if n_folds and cfg.kind == "forecast":
    validate.fail("task.folds", n_folds, "applies to classes and targets; a forecast "
                  "validates on the time after its training part (task.folds=0)")
  arrays, test_arrays = read_files(cfg)
  make_kind = _forecast_task if cfg.kind == "forecast" else _sequence_task
  (info, train, val, test, raw, baselines, metric, higher, head, free_run,
   eval_free_run) = make_kind(cfg, batch_size, arrays, test_arrays)
  named = {field: getattr(cfg, field) for field in ("train", "test") if getattr(cfg, field)}
  info.update(files=named, sources={k: files.sha256(v) for k, v in named.items()})
  return DataTask(
      name="data", in_features=info.get("model_features", info["in_features"]),
      out_features=info["out_features"],
      head=head, batch_from=lambda data, key, step: data, eval_batch=None,
      loss_and_metrics=loss_and_metrics(info), metric=metric, higher_is_better=higher,
      steps_per_epoch=base.steps_per_epoch(train.size, batch_size), free_run=free_run,
      eval_free_run=eval_free_run, causal=cfg.kind == "forecast", kind=cfg.kind, info=info,
      train_examples=train, validation=val, test=test, test_raw=raw, baselines=baselines,
      batch_size=batch_size, times=arrays.times if test_arrays is None else None,
      folds=info.get("folds", 0),
      level_features=info["in_features"] if info.get("normalize") == "both" else 0)
