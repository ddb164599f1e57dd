"""Up-front config checks: one clear line naming the field, its value and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
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
