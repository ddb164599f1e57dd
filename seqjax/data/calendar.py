"""A series' time column continued past its end, for the rows of a forecast.

Times are what `seqjax.data.readers` reads from a long CSV's time column: numbers,
or `datetime64` dates. Shape letters: T time steps, H forecast steps.
"""

from __future__ import annotations

import numpy as np


def continue_times(times: np.ndarray, count: int) -> np.ndarray | None:
  """The `count` times [H] after `times` [T], at the series' own step; None with fewer
  than two times (no step to continue).

  Dates on the same day of every month (or on every month's last day) step by whole
  months, as a calendar does (monthly, quarterly, yearly data); other dates and numbers
  step by the median gap between consecutive times.
  """
  if len(times) < 2:
    return None
  ahead = np.arange(1, count + 1)
  if times.dtype.kind != "M":
    gaps = np.diff(times.astype(np.float64))
    return times[-1] + np.median(gaps) * ahead
  # Explicit units throughout: NumPy deprecates adding bare integers to dates.
  one_month, one_day = np.timedelta64(1, "M"), np.timedelta64(1, "D")
  seconds = times.astype("datetime64[s]")
  months = seconds.astype("datetime64[M]")
  step = int(np.median(np.diff(months).astype(np.int64)))
  if step >= 1:
    later = (step * ahead).astype("timedelta64[M]")
    into_month = seconds - months.astype("datetime64[s]")
    days = seconds.astype("datetime64[D]")
    time_of_day = seconds - days.astype("datetime64[s]")
    if (into_month == into_month[0]).all():  # the same day of every month
      return (months[-1] + later).astype("datetime64[s]") + into_month[-1]
    month_end = (months + one_month).astype("datetime64[D]") - one_day
    if (days == month_end).all() and (time_of_day == time_of_day[0]).all():
      ends = (months[-1] + later + one_month).astype("datetime64[D]") - one_day
      return ends.astype("datetime64[s]") + time_of_day[-1]
  gap = np.timedelta64(int(np.median(np.diff(seconds).astype(np.int64))), "s")
  return seconds[-1] + gap * ahead


def format_times(times: np.ndarray, like: np.ndarray | None = None) -> list[str]:
  """`times` [H] as text, as precise as `like` [T] (the series' own times) needs: whole
  numbers without a decimal point; dates as months (2024-03), days (2024-03-31) or
  seconds (2024-03-31T12:00:00), the coarsest that writes every time in `like` exactly."""
  like = times if like is None else like
  if times.dtype.kind != "M":
    whole = np.all(np.round(like) == like) and np.all(np.round(times) == times)
    return [str(int(t)) if whole else repr(float(t)) for t in times]
  for unit in ("M", "D", "m", "s"):
    if np.all(like.astype(f"datetime64[{unit}]") == like):
      return [str(t) for t in times.astype(f"datetime64[{unit}]")]
  return [str(t) for t in times]
