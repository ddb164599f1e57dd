"""Up-front config checks: one clear line naming the field, its value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
  """A config value that is not allowed. `str()` is the one-line message."""


def fail(field: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def positive(field: str, value: Any) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    fail(field, value, "must be a positive integer")


def non_negative(field: str, value: Any) -> None:
  if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
    fail(field, value, "must be >= 0")


def positive_float(field: str, value: Any) -> None:
  if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
    fail(field, value, "must be > 0")


def in_range(field: str, value: Any, low: float, high: float, why: str = "") -> None:
  if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
    fail(field, value, f"allowed {low}..{high}" + (f" ({why})" if why else ""))


def one_of(field: str, value: Any, allowed: Iterable[Any]) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    fail(field, value, "allowed: " + ", ".join(map(str, allowed)))


def integer_in(field: str, value: Any, low: int, high: int, why: str = "") -> None:
  """An int (not a bool) within [low, high]."""
  if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
    fail(field, value, f"must be an integer in {low}..{high}" + (f" ({why})" if why else ""))


def finite_numbers(tree: Mapping[str, Any], prefix: str = "") -> None:
  """Every float in a (nested) config or dict is finite: NaN or Inf is a ConfigError
  naming it."""
  for key, value in tree.items():
    field = f"{prefix}{key}"
    if isinstance(value, Mapping) or hasattr(value, "items"):  # a dict or a ConfigDict
      finite_numbers(value, f"{field}.")
    elif isinstance(value, list | tuple):
      for item in value:
        if isinstance(item, float) and not math.isfinite(item):
          fail(field, value, "every number must be finite")
    elif isinstance(value, float) and not math.isfinite(value):
      fail(field, value, "must be a finite number")
