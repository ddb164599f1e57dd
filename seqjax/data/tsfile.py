"""The sktime/aeon `.ts` format of the UCR/UEA time-series archive.

A header of `@key value` lines (`@classLabel true <labels...>` or
`@targetLabel true`, `@univariate`, `@dimensions`, `@equalLength`, ...), then
`@data` and one case a line: its dimensions separated by `:`, each a comma-
separated series, the class label or target last. `?` is a missing value; a
case's dimensions may differ in length, and cases in length (padded with NaN
at the end). Lines starting with `#` or `%` are comments. Timestamped series
(`@timeStamps true`) are not read.
"""

from __future__ import annotations

import numpy as np


class TsError(ValueError):
  """What is wrong with a `.ts` file, in one line (the reader adds the file's name)."""


def parse(text: str) -> tuple[np.ndarray, np.ndarray | None, bool]:
  """(x [N, T, F] float64 padded with NaN, labels [N] (strings for classes, floats for
  targets) or None, whether the labels are class labels)."""
  header: dict[str, str] = {}
  lines = iter(enumerate(text.lstrip("\ufeff").splitlines(), 1))
  for number, line in lines:
    line = line.strip()
    if not line or line[0] in "#%":
      continue
    if not line.startswith("@"):
      raise TsError(f"line {number}: expected a @key header line or @data, got {line[:30]!r}")
    key, _, value = line[1:].partition(" ")
    if key.lower() == "data":
      break
    header[key.lower()] = value.strip()
  else:
    raise TsError("no @data line")
  if header.get("timestamps", "false").lower() == "true":
    raise TsError("@timeStamps true is not supported; write the values without timestamps")
  classes = header.get("classlabel", "false").split()
  classified = bool(classes) and classes[0].lower() == "true"
  targeted = header.get("targetlabel", "false").lower().startswith("true")
  labelled = classified or targeted
  cases, labels = [], []
  for number, line in lines:
    line = line.strip()
    if not line or line[0] in "#%":
      continue
    parts = line.split(":")
    if labelled:
      if len(parts) < 2:
        raise TsError(f"line {number}: no label after the series (expected 'values:label')")
      labels.append(parts[-1].strip())
      parts = parts[:-1]
    try:
      dims = [np.array([np.nan if v.strip() == "?" else float(v) for v in p.split(",")
                        if v.strip()], np.float64) for p in parts]
    except ValueError as e:
      raise TsError(f"line {number}: {e}") from None
    if cases and len(dims) != len(cases[0]):
      raise TsError(f"line {number}: {len(dims)} dimensions; the first case has "
                    f"{len(cases[0])}")
    cases.append(dims)
  if not cases:
    raise TsError("no cases after @data")
  steps = max(len(d) for dims in cases for d in dims)
  x = np.full((len(cases), steps, len(cases[0])), np.nan)  # float64: ranges checked later
  for i, dims in enumerate(cases):
    for f, d in enumerate(dims):
      x[i, :len(d), f] = d
  if not labelled:
    return x, None, False
  if classified:
    return x, np.array(labels), True
  try:
    return x, np.array([float(v) for v in labels], np.float64), False
  except ValueError as e:
    raise TsError(f"a regression target is not a number ({e})") from None
