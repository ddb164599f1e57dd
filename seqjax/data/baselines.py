"""The baselines this field reports beside a model, and the verdict against the best of them.

Every baseline predicts the test split in the model's own output units, so the
task's metrics judge it as they judge the model:
  classification  majority class; 1-nearest-neighbour with the Euclidean
                  distance between z-normalised series; 1-NN with dynamic time
                  warping (DTW) inside a Sakoe-Chiba band;
  regression      the training mean; ridge regression on the flattened series
                  (its penalty chosen on the validation split);
  forecast        persistence, seasonal naive and drift.
A nearest-neighbour baseline whose distance matrix would cost more than
`NN_BUDGET` cell updates is skipped (`Skipped`), with one line saying so, and
results.json and the verdict name it: a verdict against the baselines computed
is not one against every baseline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Cell updates (test series x training series x steps x steps) above which a 1-NN
# baseline is skipped: about a minute of DTW on two CPU cores.
NN_BUDGET = 4e10
# The Sakoe-Chiba band of the DTW baseline: a fraction of the longer series' length.
DTW_WINDOW = 0.1


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A baseline not computed, in place of its predictions, and why."""
  reason: str


# Ridge penalties tried (times the number of training series), the best on validation.
RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# Rows of the test x training distance matrix computed at a time (bounds the memory).
PAIR_BLOCK = 8192


def series_stats(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each series' own (mean, std) [N, 1, F] over the valid steps of x [N, T, F] (padded
  past `lengths`), in float64."""
  valid = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
  x = np.where(valid, x, 0.0).astype(np.float64)
  n = np.maximum(lengths, 1)[:, None, None]
  mean = x.sum(1, keepdims=True) / n
  std = np.sqrt((np.where(valid, x - mean, 0.0) ** 2).sum(1, keepdims=True) / n)
  return mean, std


def z_normalise(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Each series of x [N, T, F] (padded past `lengths`) by its own mean and std per
  feature; float32, zeros past each end."""
  valid = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
  mean, std = series_stats(x, lengths)
  x = np.where(valid, x, 0.0).astype(np.float64)
  return np.where(valid, (x - mean) / np.where(std > 1e-8, std, 1.0), 0.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames="reach")
def _dtw(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, band: jax.Array,
         reach: int) -> jax.Array:
  """DTW costs (sums of squared distances along the best path) of pairs a [P, Ta, F]
  (lengths la [P]) and b [P, Tb, F] (lb [P]), warping at most `band` [P] steps off the
  diagonal (at most `reach`, static).

  Computed along anti-diagonals d = i + j, whose cells do not depend on each other:
  a cell k = i - j of diagonal d follows (d - 2, k), (d - 1, k - 1) and (d - 1, k + 1).
  """
  k = jnp.arange(-reach, reach + 1)
  inf = jnp.asarray(jnp.inf, a.dtype)
  last = la + lb - 2  # the diagonal of the end cell, k = la - lb

  def diagonal(carry, d):
    before, prev, out = carry
    i, j = (d + k) // 2, (d - k) // 2
    cell = ((d + k) % 2 == 0) & (i >= 0) & (j >= 0)
    cell = cell[None] & (i[None] < la[:, None]) & (j[None] < lb[:, None]) & (
        jnp.abs(k)[None] <= band[:, None])
    cost = jnp.sum((jnp.take(a, jnp.clip(i, 0, a.shape[1] - 1), axis=1)
                    - jnp.take(b, jnp.clip(j, 0, b.shape[1] - 1), axis=1)) ** 2, -1)
    pad = jnp.full_like(prev[:, :1], inf)
    up, left = (jnp.concatenate([pad, prev[:, :-1]], 1),  # (d - 1, k - 1): row i - 1
                jnp.concatenate([prev[:, 1:], pad], 1))  # (d - 1, k + 1): column j - 1
    origin = jnp.where(d == 0, 0.0, inf)
    now = jnp.where(cell, cost + jnp.minimum(jnp.minimum(before, origin),
                                             jnp.minimum(up, left)), inf)
    end = jnp.take_along_axis(now, (la - lb + reach)[:, None], axis=1)[:, 0]
    return (prev, now, jnp.where(d == last, end, out)), None

  empty = jnp.full((a.shape[0], 2 * reach + 1), inf, a.dtype)
  (_, _, out), _ = jax.lax.scan(diagonal, (empty, empty, jnp.full(a.shape[0], inf, a.dtype)),
                                jnp.arange(a.shape[1] + b.shape[1] - 1))
  return out


@jax.jit
def _euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances [Na, Nb] of flattened a [Na, D] and b [Nb, D]."""
  return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
          - 2 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))


def nn_cost(n_test: int, n_train: int, steps: int, distance: str) -> float:
  """Cell updates of a 1-NN baseline's distance matrix."""
  return n_test * n_train * steps * (steps if distance == "dtw" else 1)


def distances(test: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
              distance: str) -> np.ndarray:
  """[N_test, N_train] distances between z-normalised series (x [N, T, F], lengths [N])."""
  (xa, la), (xb, lb) = test, train
  if distance == "euclidean":
    steps = max(xa.shape[1], xb.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0)))  # noqa: E731
    return np.asarray(_euclidean(pad(xa).reshape(len(xa), -1), pad(xb).reshape(len(xb), -1)))
  pairs_a, pairs_b = np.divmod(np.arange(len(xa) * len(xb)), len(xb))
  # Each pair's band: a fraction of its longer series, widened to the length difference
  # so that the ends meet.
  band = np.maximum(np.maximum(1, np.round(DTW_WINDOW * np.maximum(
      la[pairs_a], lb[pairs_b]))), np.abs(la[pairs_a] - lb[pairs_b])).astype(np.int32)
  reach = int(band.max())
  out = np.empty(len(pairs_a), np.float32)
  for s in range(0, len(pairs_a), PAIR_BLOCK):
    ia, ib = pairs_a[s:s + PAIR_BLOCK], pairs_b[s:s + PAIR_BLOCK]
    n = len(ia)  # the last block padded to a full one: one compiled shape
    ia, ib = np.resize(ia, PAIR_BLOCK), np.resize(ib, PAIR_BLOCK)
    d = _dtw(xa[ia], la[ia].astype(np.int32), xb[ib], lb[ib].astype(np.int32),
             band[s:s + PAIR_BLOCK][np.arange(PAIR_BLOCK) % n], reach)
    out[s:s + n] = np.asarray(d)[:n]
  return out.reshape(len(xa), len(xb))


def nearest_neighbour(test, train, labels: np.ndarray, n_classes: int,
                      distance: str) -> np.ndarray:
  """1-NN class scores [N_test, C] (log of one-hot, clipped) from `distances`; the
  first of tied neighbours wins."""
  nearest = labels[np.argmin(distances(test, train, distance), axis=1)]
  return np.log(np.where(np.eye(n_classes)[nearest] > 0, 1.0, 1e-6)).astype(np.float32)


def ridge(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
          test_x: np.ndarray) -> tuple[np.ndarray, float]:
  """Ridge regression on flattened inputs [N, D] to targets [N, K]; the penalty (times
  N) with the lowest validation MAE. Returns (test predictions [N_test, K], penalty)."""
  x, xm = train_x.astype(np.float64), train_x.mean(0)
  ym = train_y.mean(0)
  xc, yc = x - xm, train_y - ym
  gram = xc @ xc.T  # dual form: N training series, often fewer than their N x D values
  best = None
  for penalty in RIDGE_PENALTIES:
    alpha = np.linalg.solve(gram + penalty * len(x) * np.eye(len(x)), yc)
    predict = lambda z, alpha=alpha: (z - xm) @ (xc.T @ alpha) + ym  # noqa: E731
    mae = np.abs(predict(val_x) - val_y).mean()
    if best is None or mae < best[0]:
      best = (mae, penalty, predict)
  return best[2](test_x).astype(np.float32), best[1]


def drift(windows: np.ndarray, horizon: int) -> np.ndarray:
  """The drift forecast of windows [N, W, F]: the last value plus h times the window's
  mean step, for h = 1..horizon; [N, horizon, F]."""
  slope = (windows[:, -1] - windows[:, 0]) / max(windows.shape[1] - 1, 1)
  return windows[:, -1:] + slope[:, None] * np.arange(1, horizon + 1)[None, :, None]


def verdict(metric: str, higher_is_better: bool, model: float | None,
            baselines: dict[str, dict[str, float]],
            skipped: tuple[str, ...] = ()) -> dict[str, Any] | None:
  """Whether the model's test `metric` beat the best baseline's, and by how much.

  Returns None without baselines, else {"best_baseline", "baseline", "model",
  "beat", "tie", "ratio"} where ratio is model / baseline (for an error, < 1 is
  better; for accuracy, > 1 is better), and "not_computed": the `skipped`
  baselines, when any. Figures within float32 rounding of each other tie (a tie
  is not a win). A model without a finite figure did not beat it.
  """
  scored = {n: m[metric] for n, m in baselines.items() if np.isfinite(m.get(metric, np.nan))}
  if not scored:
    return None
  pick = max if higher_is_better else min
  name = pick(scored, key=scored.get)
  base = scored[name]
  finite = model is not None and np.isfinite(model)
  tie = finite and abs(model - base) <= 8 * np.finfo(np.float32).eps * max(abs(base), 1e-30)
  beat = finite and not tie and (model > base if higher_is_better else model < base)
  ratio = float(model / base) if finite and base != 0 else None
  out = {"best_baseline": name, "baseline": float(base),
         "model": float(model) if finite else None, "beat": bool(beat), "tie": bool(tie),
         "ratio": ratio}
  if skipped:
    out["not_computed"] = list(skipped)
  return out


def verdict_line(v: dict[str, Any], metric: str) -> str:
  """The console's last line for a `verdict`."""
  model = "no finite figure" if v["model"] is None else f"{metric}={v['model']:.4g}"
  head = "beat" if v["beat"] else "tied with" if v.get("tie") else "did NOT beat"
  by = f" (ratio {v['ratio']:.3f})" if v["ratio"] is not None else ""
  missing = (f"; not computed: {', '.join(v['not_computed'])} (over the size budget)"
             if v.get("not_computed") else "")
  return (f"verdict: the model {head} the best baseline on the test split: {model} against "
          f"{v['best_baseline']} {metric}={v['baseline']:.4g}{by}{missing}")
