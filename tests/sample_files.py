"""Small data files that several test modules write (the session fixtures are conftest's)."""

import numpy as np


def write_monthly_csv(path, values, start_year=2000):
  """A monthly series, `month,sales`, from January of `start_year`; returns `path`."""
  rows = "".join(f"{start_year + i // 12}-{i % 12 + 1:02d},{v:.4f}\n"
                 for i, v in enumerate(values))
  path.write_text("month,sales\n" + rows)
  return path


def write_shapes_csv(path, n=160, steps=30, seed=0):
  """Two classes of shape (a rising or a falling ramp plus noise), each sequence at its
  own level and amplitude: a class is its shape, not its values. Returns (path, x [N, T])."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  ramp = np.where(y[:, None] == 1, 1.0, -1.0) * np.linspace(-1, 1, steps)[None, :]
  x = (ramp + 0.3 * rng.normal(size=(n, steps))) * rng.uniform(0.1, 50, (n, 1)) + rng.uniform(
      -100, 100, (n, 1))
  rows = "".join(",".join(f"{v:.5f}" for v in row) + f",{label}\n"
                 for row, label in zip(x, y, strict=True))
  path.write_text(",".join(f"t{i}" for i in range(steps)) + ",label\n" + rows)
  return path, x
