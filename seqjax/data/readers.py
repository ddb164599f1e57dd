"""Reading a user's sequences from `.npy`, `.npz`, `.csv` and `.ts` files, with one-line errors.

Shape letters: N sequences, T time steps, F features.

What a file may hold:
  .npz   `x` [N, T] or [N, T, F]; `y` [N] or [N, K] (labels or targets);
         optional `lengths` [N]. For forecasting, `x` is one series [T] or
         [T, F] (F features), or many [N, T, F], with no `y`.
  .npy   `x` alone (a series to forecast, or inputs to predict).
  .csv   wide: one sequence a row, the label in the column `task.label` names,
         else the column named `label`, `target`, `class` or `y` (any case),
         else the last column (numbers, or words such as class names); the other
         columns are its time steps (univariate). A first row is a header when
         one of its cells is a word over a column of numbers.
         long: one time step a row, ordered by `time_column` (numbers or ISO
         dates); every other column is a feature of one series. An unnamed
         first column (pandas' index) is called `index`.
  .ts    the UCR/UEA archive's format (sktime, aeon): univariate or
         multivariate, equal or unequal lengths, class labels (numbers or
         names) or regression targets (`seqjax.data.tsfile`).
Sequences of different lengths are padded with NaN at their end (a `lengths`
array may say so instead); a NaN anywhere else is an error.

Every problem is a `validate.ConfigError` naming the file, the field and what
was expected, raised before anything is compiled.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from seqjax.config import validate
from seqjax.data import tsfile
from seqjax.runtime import files

EXTENSIONS = (".npy", ".npz", ".csv", ".ts")
# A wide CSV column with one of these names (any case) holds the labels, wherever it is.
LABEL_NAMES = ("label", "target", "class", "y")


@dataclasses.dataclass
class Arrays:
  """What one file holds.

  x: [N, T, F] float32, padded with NaN after each sequence's end.
  y: [N] or [N, K] labels / targets, or None.
  lengths: [N] valid steps of each sequence.
  features: names of the F features (CSV long format), else None.
  label: the name of the label column (CSV), else None.
  label_by: how a wide CSV's label column was found: "task.label", "name" (one of
    LABEL_NAMES) or "last" (the last column); else None.
  times: a long CSV's time column [T], in order (numbers, or datetime64 for dates),
    else None.
  """
  x: np.ndarray
  y: np.ndarray | None
  lengths: np.ndarray
  features: list[str] | None = None
  label: str | None = None
  csv_label: tuple[int, int] | None = None  # wide CSV: (label column, columns)
  columns: list[str] | None = None  # a CSV's header, label column excluded
  times: np.ndarray | None = None
  label_by: str | None = None


def error(path: str, field: str, message: str) -> None:
  raise validate.ConfigError(f"{field}={path!r}: {message}")


# The largest magnitude a target may have (a regression's y, a forecast's series): a
# squared error's sum over a million examples must fit float32 (3.4e38). Inputs are
# normalised before the model sees them: they need only fit float32.
LARGEST = 1e15
FLOAT32_MAX = float(np.finfo(np.float32).max)


def in_range(path: str, field: str, values: np.ndarray, what: str = "x",
             columns: list[str] | None = None, column_axis: int = 1,
             limit: float = FLOAT32_MAX) -> np.ndarray:
  """`values` (any real dtype) as float32, or a ConfigError naming the first finite value
  beyond `limit` (float32's largest, or `LARGEST` for targets), and its CSV column
  (`columns`, indexed along `column_axis`) when it has one."""
  values = np.asarray(values)
  with np.errstate(invalid="ignore"):
    big = np.isfinite(values) & (np.abs(values) > limit)
  if big.any():
    where = np.argwhere(big)[0]
    axes = ("sequence", "target") if what == "y" else ("sequence", "step", "feature")
    at = ", ".join(f"{name} {i}" for name, i in zip(axes, where, strict=False))
    if columns and where[column_axis] < len(columns):
      at += f", column {columns[where[column_axis]]!r}"
    why = ("float32's range" if limit == FLOAT32_MAX
           else "a squared error's sum must fit float32")
    error(path, field, f"{what} holds {values[tuple(where)]:g} ({at}); values must lie within "
          f"±{limit:g} ({why}): rescale the column")
  return values.astype(np.float32, copy=False)


def read(path: str, field: str, *, series: bool = False, label: str = "",
         time_column: str = "", inputs_only: bool = False,
         csv_label: tuple[int, int] | None = None) -> Arrays:
  """Reads `path` (the config field `field` named it).

  Args:
    series: forecasting: `x` may be one series [T] / [T, F] (made [1, T, F]),
      and a file needs no labels.
    label: the CSV column holding the label ("" the last column); ignored
      with `time_column` and for `.npy`/`.npz`.
    time_column: the CSV is long format, one step a row ordered by it.
    inputs_only: sequences without labels (to predict): every CSV column but
      one named `label` is a time step, or but column i of a CSV as wide as
      the training file (`csv_label` = (i, width)), which held its labels.
  """
  if not path:
    error(path, field, "no file given; set it to a .npy, .npz, .csv or .ts file")
  ext = os.path.splitext(path)[1].lower()
  if ext not in EXTENSIONS:
    error(path, field, f"unknown extension {ext or '(none)'!r}; allowed: "
          + ", ".join(EXTENSIONS))
  if not files.path(path).is_file():
    error(path, field, "no such file")
  if files.path(path).stat().length == 0:
    error(path, field, "the file is empty")
  # numpy reads a local file itself (no copy of its bytes); other stores through epath.
  content = (path if files.is_local(path) and ext not in (".csv", ".ts")
             else files.path(path).read_bytes())
  if ext == ".ts":
    arrays = _read_ts(path, field, content.decode("utf-8-sig", errors="replace"))
  elif ext == ".csv":
    text = content.decode("utf-8-sig", errors="replace")
    arrays = (_read_long_csv(path, field, text, time_column) if time_column
              else _read_wide_csv(path, field, text, label, series or inputs_only, csv_label))
  else:
    arrays = _read_numpy(path, field, content, ext, series)
  if arrays.x.shape[0] == 0 or arrays.x.shape[1] == 0:
    error(path, field, f"no sequences in the file (x has shape {arrays.x.shape})")
  return arrays


def _read_ts(path, field, text) -> Arrays:
  try:
    x, y, _ = tsfile.parse(text)
  except tsfile.TsError as e:
    error(path, field, f"not a readable .ts file: {e}")
  x = in_range(path, field, x)
  if y is not None and y.dtype.kind == "U":
    try:  # class labels that are all integers stay numbers
      y = np.array([int(v) for v in y], np.int64)
    except ValueError:
      pass
  return Arrays(x, y, padding_lengths(path, field, x))


def _read_numpy(path, field, content, ext, series) -> Arrays:
  try:
    loaded = np.load(content if isinstance(content, str) else io.BytesIO(content),
                     allow_pickle=False)
  except Exception as e:  # noqa: BLE001  (any unreadable file: one line)
    error(path, field, f"not a readable {ext} file ({type(e).__name__})")
  if ext == ".npy":
    x, y, lengths = loaded, None, None
  else:
    with loaded:
      if "x" not in loaded.files:
        error(path, field, f"no array 'x' in the .npz (it has: {', '.join(loaded.files)}); "
              "expected keys x, y and optionally lengths")
      try:
        x = loaded["x"]
        y = loaded["y"] if "y" in loaded.files else None
        lengths = loaded["lengths"] if "lengths" in loaded.files else None
      except ValueError as e:  # object arrays (ragged lists), which need pickle
        error(path, field, f"an array of the .npz is not numeric ({str(e).splitlines()[0]}); "
              "pad sequences with NaN to one length")
  if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
    error(path, field, f"x must hold real numbers; got dtype {x.dtype}")
  if series and x.ndim in (1, 2) and y is None and lengths is None:
    x = x[None, :, None] if x.ndim == 1 else x[None]  # one series [T] or [T, F]
  elif x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3:
    error(path, field, f"x must be [N, T] or [N, T, F]; got shape {x.shape}")
  x = in_range(path, field, x)
  if y is not None and (y.ndim == 0 or y.shape[:1] != x.shape[:1]):
    error(path, field, f"x and y hold different numbers of sequences: x has {x.shape[0]}, "
          f"y has {y.shape[0] if y.ndim else 'a scalar'}")
  if lengths is not None:
    lengths = _check_lengths(path, field, lengths, x.shape[:2])
    x = np.where(np.arange(x.shape[1])[None, :, None] < lengths[:, None, None], x, np.nan)
  return Arrays(x, y, padding_lengths(path, field, x))


def _check_lengths(path, field, lengths, shape) -> np.ndarray:
  lengths = np.asarray(lengths)
  n, steps = shape
  if lengths.shape != (n,):
    error(path, field, f"lengths must be [N] = ({n},); got shape {lengths.shape}")
  if not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 1 or lengths.max() > steps:
    error(path, field, f"lengths must be integers in 1..{steps} (the time steps)")
  return lengths.astype(np.int32)


def padding_lengths(path: str, field: str, x: np.ndarray) -> np.ndarray:
  """[N] valid steps of x [N, T, F]: the steps before its trailing all-NaN steps.

  A NaN inside a sequence (before its last valid step), or in only some of a
  step's features, is an error naming the sequence and step.
  """
  if not x.size:
    error(path, field, f"no values in the file (x has shape {x.shape})")
  if np.isinf(x).any():
    i, t = np.argwhere(np.isinf(x).any(-1))[0]
    error(path, field, f"sequence {i} has an infinite value at step {t}")
  missing = np.isnan(x)  # [N, T, F]
  step_missing = missing.all(-1)
  partial = missing.any(-1) & ~step_missing
  if partial.any():
    i, t = np.argwhere(partial)[0]
    error(path, field, f"sequence {i} has NaN in some features at step {t}; a step is "
          "either all values or all NaN (padding)")
  valid = ~step_missing
  steps = x.shape[1]
  # The last valid step + 1; padding must be exactly the steps after it.
  lengths = np.where(valid.any(1), steps - np.argmax(valid[:, ::-1], axis=1), 0)
  inside = step_missing & (np.arange(steps)[None, :] < lengths[:, None])
  if inside.any():
    i, t = np.argwhere(inside)[0]
    error(path, field, f"sequence {i} has NaN at step {t}, inside the sequence; NaN may "
          "only pad the end of a sequence (or give a lengths array)")
  if (lengths == 0).any():
    error(path, field, f"sequence {int(np.argmax(lengths == 0))} has no values")
  return lengths.astype(np.int32)


def _is_number(cell: str) -> bool:
  cell = cell.strip()
  try:
    float(cell)
  except ValueError:
    return not cell  # an empty cell is a missing value
  return True


def _rows(path, field, text) -> tuple[list[str] | None, list[list[str]]]:
  """(header or None, data rows) of a CSV.

  The first row is a header when a column holds a word there and numbers below it
  (`t0,t1,label` over `0.5,0.7,yes`; a column of words, such as class names or
  dates, says nothing), or when its first cell is empty above a value (pandas'
  `to_csv` writes its index so: `,0` over `1821,269`). A file of one row has a
  header if that row is not all numbers.
  """
  rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
  if not rows:
    error(path, field, "the file is empty")
  first, below = rows[0], rows[1:21]
  if not below:
    named = not all(_is_number(c) for c in first)
  else:
    def word_over_numbers(j: int) -> bool:
      cells = [r[j] for r in below if j < len(r) and r[j].strip()]
      return bool(cells) and all(_is_number(c) for c in cells)
    named = any(not _is_number(c) and word_over_numbers(j) for j, c in enumerate(first))
    named = named or (bool(first) and not first[0].strip() and bool(below[0])
                      and bool(below[0][0].strip()))
  header = None
  if named:
    header, rows = [c.strip() for c in first], rows[1:]
  if not rows:
    error(path, field, "the file has a header and no rows")
  width = len(header) if header else max(len(r) for r in rows)
  for i, r in enumerate(rows):
    if len(r) > width:
      error(path, field, f"row {i + 1 + bool(header)} has {len(r)} columns; the header has "
            f"{width}")
  return header, rows


def _numbers(path, field, rows, width, first_row=1, skip=None) -> np.ndarray:
  """[rows, width] float of the file's `width` columns, less column `skip` when given:
  empty cells (and missing trailing cells) are NaN. `first_row`: the file's line number
  of rows[0], for messages, which name the file's own column."""
  keep = [j for j in range(width) if j != skip]
  out = np.full((len(rows), len(keep)), np.nan, np.float64)
  for i, r in enumerate(rows):
    for k, j in enumerate(keep):
      c = r[j].strip() if j < len(r) else ""
      if c and c.lower() != "nan":
        try:
          out[i, k] = float(c)
        except ValueError:
          error(path, field, f"row {i + first_row}, column {j + 1} is {c!r}, not a number")
  return out


def _read_wide_csv(path, field, text, label, no_labels, csv_label=None) -> Arrays:
  header, rows = _rows(path, field, text)
  width = len(header) if header else max(len(r) for r in rows)
  if header and not header[0]:
    error(path, field, "the first column has no name (a pandas index?); write the CSV "
          "without it (to_csv(..., index=False))")
  first_row = 2 if header else 1
  if no_labels:  # every column is a time step; a label column, if named, is dropped
    drop = None
    if label and header and label in header:
      drop = header.index(label)
    elif csv_label is not None and width == csv_label[1]:
      drop = csv_label[0]
    values = _numbers(path, field, rows, width, first_row, skip=drop)
    columns = [h for h in header if h != label] if header else None
    x = in_range(path, field, values[..., None], columns=columns)
    return Arrays(x, None, padding_lengths(path, field, x), columns=columns)
  if label:
    if not header:
      error(path, field, f"task.label={label!r} names a column, but the CSV has no header")
    if label not in header:
      error(path, field, f"no column {label!r} in the header (columns: "
            f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''})")
    col, by = header.index(label), "task.label"
  else:
    named = [j for j, h in enumerate(header or ()) if h.strip().lower() in LABEL_NAMES]
    if len(named) > 1:
      error(path, field, f"columns {', '.join(repr(header[j]) for j in named)} are each named "
            "like a label column; set task.label to the one that holds the labels")
    col, by = (named[0], "name") if named else (width - 1, "last")
  cells = [r[col].strip() if col < len(r) else "" for r in rows]
  if not all(cells):
    error(path, field, f"the label column is empty in row "
          f"{cells.index('') + first_row}")
  # Labels are numbers, or words (class names) when any of them is not a number.
  y = (np.array([float(c) for c in cells]) if all(_is_number(c) for c in cells)
       else np.array(cells))
  columns = [h for j, h in enumerate(header) if j != col] if header else None
  x = in_range(path, field, _numbers(path, field, rows, width, first_row, skip=col)[..., None],
               columns=columns)
  if x.shape[1] == 0:
    error(path, field, "the CSV has a label column and no time steps")
  return Arrays(x, y, padding_lengths(path, field, x),
                label=header[col] if header else None, csv_label=(col, width),
                columns=columns, label_by=by)


def _read_long_csv(path, field, text, time_column) -> Arrays:
  header, rows = _rows(path, field, text)
  if header and not header[0]:  # pandas' index, often the time: call it `index`
    header[0] = "index"
  if not header or time_column not in header:
    error(path, field, f"task.time_column={time_column!r} is not a column of the header "
          f"({', '.join(header or ['no header'])})")
  col = header.index(time_column)
  names = [h for j, h in enumerate(header) if j != col]
  if not names:
    error(path, field, "the CSV has a time column and no value columns")
  times = [r[col].strip() if col < len(r) else "" for r in rows]
  if not all(times):
    error(path, field, f"task.time_column={time_column!r} is empty in row "
          f"{times.index('') + 2}; every row needs its time")
  try:
    keys = np.asarray([float(t) for t in times])
  except ValueError:
    try:
      keys = np.asarray(times, dtype="datetime64[s]")
    except ValueError:
      error(path, field, f"task.time_column={time_column!r} holds values that are neither "
            "numbers nor ISO dates (2024-01-31 or 2024-01-31T12:00)")
  unique, counts = np.unique(keys, return_counts=True)
  if (counts > 1).any():
    error(path, field, f"time {unique[counts > 1][0]} appears in {counts.max()} rows; one "
          "row a time step")
  order = np.argsort(keys, kind="stable")
  values = _numbers(path, field, rows, len(header), 2, skip=col)
  x = in_range(path, field, values[order][None], columns=names, column_axis=2)  # [1, T, F]
  return Arrays(x, None, padding_lengths(path, field, x), features=names, columns=names,
                times=keys[order])


def check_columns(path: str, field: str, columns: list[str] | None,
                  trained: list[str] | None) -> None:
  """ConfigError unless a CSV's header (if it has one) matches the training file's."""
  if columns is not None and trained is not None and columns != trained:
    diff = next((f"column {i + 1} is {a!r}, the training file's is {b!r}"
                 for i, (a, b) in enumerate(zip(columns, trained, strict=False)) if a != b),
                f"{len(columns)} columns, the training file has {len(trained)}")
    error(path, field, f"the CSV header does not match the training file's: {diff}")


def write(path: str, values: np.ndarray, header: list[str] | None = None) -> None:
  """Writes predictions [N, ...] to `.npy` or `.csv` (one row each, flattened)."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    buffer = io.BytesIO()
    np.save(buffer, values)
    files.path(path).write_bytes(buffer.getvalue())
    return
  if ext != ".csv":
    raise validate.ConfigError(f"--output={path!r}: unknown extension {ext or '(none)'!r}; "
                               "allowed: .npy, .csv")
  write_rows(path, header, np.asarray(values).reshape(len(values), -1).tolist())


def write_rows(path: str, header: list[str] | None, rows: list[list]) -> None:
  """Writes `rows` (lists of cells) to a `.csv`, below `header` if given."""
  out = io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  if header:
    w.writerow(header)
  w.writerows(rows)
  files.write_text(path, out.getvalue())
