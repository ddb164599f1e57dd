"""The baselines this field reports beside a model, and the verdict against the best of them.

Every baseline predicts the test split in the model's own output units, so the
task's metrics judge it as they judge the model:
  classification  majority class; 1-nearest-neighbour with the Euclidean
                  distance between z-normalised series; 1-NN with dynamic time
                  warping (DTW) inside a Sakoe-Chiba band (`in_band`);
  regression      the training mean; ridge regression on the flattened series
                  (its penalty chosen on the validation split);
  forecast        persistence, seasonal naive and drift.
1-NN DTW computes a pair's distance only where a cheap lower bound (LB_Keogh)
says it could be the nearest. A nearest-neighbour baseline that would still
cost more than `NN_BUDGET` cell updates is skipped (`Skipped`), with one line
saying so, and results.json and the verdict name it: a verdict against the
baselines computed is not one against every baseline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Cell updates above which a 1-NN baseline is skipped (Euclidean: test series x
# training series x steps; DTW: twice as many for the lower bounds, plus the band's cells
# of the pairs they leave): about a minute of DTW on two CPU cores.
NN_BUDGET = 4e10
# The Sakoe-Chiba band of the DTW baseline: a fraction of the shorter series' length.
DTW_WINDOW = 0.1
# The longest series the DTW baseline computes: its band's cells are found in int32
# products of lengths (`in_band`, `_dtw`'s first column of a diagonal: up to twice
# this squared), exact up to here.
MAX_STEPS = 32767


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A baseline not computed, in place of its predictions, and why."""
  reason: str


# Ridge penalties tried (times the number of training series), the best on validation.
RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# Pairs of series whose DTW is computed at a time (bounds the memory).
PAIR_BLOCK = 1024
# Steps of a series whose lower bound is summed at a time (`_keogh`).
STEP_BLOCK = 64
# Floats of one chunk's windowed maxima (`_sparse_max`, and as many minima) when lower
# bounds are computed a chunk of series at a time: they hold about log2(steps) copies of
# the series, several GB for tens of thousands of long ones.
TABLE_FLOATS = 1 << 26


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


@functools.partial(jax.jit, static_argnames="width")
def _dtw(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, band: jax.Array,
         width: int) -> jax.Array:
  """DTW costs (sums of squared distances along the best path) of pairs a [P, Ta, F]
  (lengths la [P]) and b [P, Tb, F] (lb [P], the shorter: lb <= la), inside each
  pair's band [P] (`in_band`).

  Computed along anti-diagonals d = i + j, whose cells do not depend on each other:
  cell (i, j) follows (i - 1, j - 1) on diagonal d - 2, and (i - 1, j) and (i, j - 1)
  on d - 1. With p = lb - 1 and q = la - 1, the band's cells of diagonal d are the
  columns j with |d p - j (p + q)| <= band q: at most `_band_width` of them (at most
  `width`, static: the compiled shape), from `first(d)` on. Each diagonal is stored
  as those columns, and the previous two are shifted to them. The loop runs
  max(la + lb) - 1 diagonals: the lengths are not compiled in.
  """
  t = jnp.arange(width)
  inf = jnp.asarray(jnp.inf, a.dtype)
  pad = jnp.full((a.shape[0], 1), inf, a.dtype)
  p, q = lb - 1, la - 1
  span = jnp.maximum(p + q, 1)

  def first(d):  # [P] the first column of diagonal d inside the band and both series
    low = -((band * q - d * p) // span)  # ceil((d p - band q) / (p + q))
    return jnp.maximum(jnp.maximum(0, low), d - la + 1)

  def shift(x, by):  # y[p, c] = x[p, c + by[p]] for by in -1, 0, 1 (inf outside)
    by = by[:, None]
    return jnp.where(by < 0, jnp.concatenate([pad, x[:, :-1]], 1),
                     jnp.where(by > 0, jnp.concatenate([x[:, 1:], pad], 1), x))

  def diagonal(d, carry):
    before, prev, out = carry
    start, start_1, start_2 = first(d), first(d - 1), first(d - 2)
    j = start[:, None] + t[None]  # [P, width]
    i = d - j
    cell = ((i >= 0) & (i < la[:, None]) & (j < lb[:, None])
            & in_band(i, j, la[:, None], lb[:, None], band[:, None]))
    gather = lambda x, at: jnp.take_along_axis(  # noqa: E731
        x, jnp.clip(at, 0, x.shape[1] - 1)[..., None], axis=1)
    cost = jnp.sum((gather(a, i) - gather(b, j)) ** 2, -1)
    diag = jnp.where(d == 0, 0.0, shift(before, start - start_2 - 1))
    now = jnp.where(cell, cost + jnp.minimum(
        diag, jnp.minimum(shift(prev, start - start_1), shift(prev, start - start_1 - 1))), inf)
    end = jnp.take_along_axis(now, jnp.clip(lb - 1 - start, 0, width - 1)[:, None], 1)[:, 0]
    return prev, now, jnp.where(d == la + lb - 2, end, out)

  empty = jnp.full((a.shape[0], width), inf, a.dtype)
  _, _, out = jax.lax.fori_loop(0, (la + lb).max() - 1, diagonal,
                                (empty, empty, jnp.full(a.shape[0], inf, a.dtype)))
  return out


@jax.jit
def _euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances [Na, Nb] of flattened a [Na, D] and b [Nb, D]."""
  return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
          - 2 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))


def _grid(v: np.ndarray) -> np.ndarray:
  """v rounded up to the next of 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, ... (2 ** (k / 3),
  rounded): the static shapes of DTW blocks, few and never far above their pairs'."""
  grid = np.unique(np.round(2.0 ** (np.arange(90) / 3))).astype(np.int64)
  return grid[np.searchsorted(grid, v)]


def in_band(i, j, la, lb, band):
  """Whether cell (i, j) of series of lengths la and lb lies in their Sakoe-Chiba
  band: at most `band` steps of the shorter series off the straight line from their
  first steps to their last (aeon's band for unequal lengths; for equal ones,
  |i - j| <= band). Integer arrays, broadcast; exact while la, lb <= `MAX_STEPS`."""
  return jnp.abs(i * (lb - 1) - j * (la - 1)) <= band * (jnp.maximum(la, lb) - 1)


def _bands(la: np.ndarray, lb: np.ndarray) -> np.ndarray:
  """The band (`in_band`) of pairs of lengths la and lb: a fraction of the shorter
  series' length, at least one step."""
  return np.maximum(1, np.round(DTW_WINDOW * np.minimum(la, lb))).astype(np.int32)


def _band_width(la: np.ndarray, lb: np.ndarray, band: np.ndarray) -> np.ndarray:
  """The most cells of an anti-diagonal inside the band of pairs of lengths la >= lb:
  an interval of length 2 band q / (p + q) (p = lb - 1, q = la - 1) holds at most its
  floor plus one columns, and never more than the shorter series has."""
  p, q = lb.astype(np.int64) - 1, la.astype(np.int64) - 1
  return np.minimum(2 * band * q // np.maximum(p + q, 1) + 1, lb)


def _block_size(pairs: int) -> int:
  return min(PAIR_BLOCK, 1 << max(int(pairs) - 1, 0).bit_length())


def _dtw_blocks(la: np.ndarray, lb: np.ndarray):
  """Blocks of the pairs of lengths la [P] >= lb [P] with similar cells per diagonal
  (`_dtw`'s width), then similar lengths: (indices into the pairs, bands, width) per
  block. One block for every pair would pay each pair the longest series and the
  widest band of them all; a width is a compiled shape, rounded up to one of a few."""
  band = _bands(la, lb)
  width = _grid(_band_width(la, lb, band))
  order = np.lexsort((la + lb, width))
  size = _block_size(len(order))
  for s in range(0, len(order), size):
    block = order[s:s + size]
    yield block, band[block], int(width[block].max())


def _dtw_cells(la: np.ndarray, lb: np.ndarray) -> float:
  """Cell updates of `_dtw_pairs` on pairs of lengths la [P] and lb [P]."""
  size = _block_size(len(la))
  la, lb = np.maximum(la, lb), np.minimum(la, lb)
  # In floats: a sum of int32 products (lengths are int32) wraps around past 2 ** 31.
  return sum(float(size) * float((la[block] + lb[block] - 1).max()) * width
             for block, _, width in _dtw_blocks(la, lb))


def _dtw_pairs(test: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
               pairs_a: np.ndarray, pairs_b: np.ndarray) -> np.ndarray:
  """DTW costs [P] of the pairs (test pairs_a [P], train pairs_b [P])."""
  (xa, la), (xb, lb) = test, train
  # DTW is symmetric: each pair is computed with its longer series first.
  swap = la[pairs_a] < lb[pairs_b]
  longer, shorter = np.maximum(la[pairs_a], lb[pairs_b]), np.minimum(la[pairs_a], lb[pairs_b])
  steps = max(xa.shape[1], xb.shape[1])

  def gather(rows: np.ndarray, which: np.ndarray) -> np.ndarray:
    """[len(rows), steps, F]: the test series where `which` is False, else the training
    one, zero-padded to `steps`."""
    out = np.zeros((len(rows), steps, xa.shape[2]), xa.dtype)
    for x, pairs, pick in ((xa, pairs_a, ~which), (xb, pairs_b, which)):
      out[pick, :x.shape[1]] = x[pairs[rows[pick]]]
    return out

  out = np.empty(len(pairs_a), np.float32)
  size = _block_size(len(pairs_a))
  for block, band, width in _dtw_blocks(longer, shorter):
    n = len(block)  # a short last block padded to a full one: one compiled shape
    block, band = np.resize(block, size), np.resize(band, size)
    d = _dtw(gather(block, swap[block]), longer[block].astype(np.int32),
             gather(block, ~swap[block]), shorter[block].astype(np.int32), band, width)
    out[block[:n]] = np.asarray(d)[:n]
  return out


def _sparse_max(x: np.ndarray) -> np.ndarray:
  """[levels, N, T, F] maxima of x [N, T, F] over the 2 ** level steps from each step on
  (a sparse table: the maximum of any window is that of two overlapping rows)."""
  levels = [x]
  while 2 ** len(levels) <= x.shape[1]:
    top, half = levels[-1], 2 ** (len(levels) - 1)
    levels.append(np.maximum(top, np.concatenate([top[:, half:], top[:, -half:]], 1)))
  return np.stack(levels)


@jax.jit
def _keogh(a: jax.Array, la: jax.Array, band: jax.Array, upper: jax.Array, lower: jax.Array,
           lb: jax.Array) -> jax.Array:
  """LB_Keogh lower bounds [Na, Nb] of the DTW of series a [Na, T, F] (lengths la [Na])
  to series with lengths lb [Nb] whose windowed maxima (and minima) are `upper`
  (`lower`) [levels, Nb, Tb, F] (`_sparse_max`), inside each pair's band [Na, Nb]
  (`in_band`).

  Every step i of a lies on the warping path in some cell (i, j) inside the band, so
  the path costs at least the squared distance of a[i] to the band's envelope of b
  around i, summed over a's steps. A series' steps are summed `STEP_BLOCK` at a time,
  as many blocks as its length needs (T is a multiple of it): the work follows each
  series' length, not the longest one's.
  """
  log2 = jnp.asarray(np.floor(np.log2(np.arange(1, 2 * upper.shape[2] + 2))).astype(np.int32))
  last = lb[:, None] - 1  # m - 1
  rows = jnp.arange(lb.shape[0])[:, None]

  def one(args):
    x, n, band = args  # [T, F], its length, its bands [Nb]
    reach = band[:, None] * (jnp.maximum(n, lb[:, None]) - 1)

    def block(k, total):
      steps = k * STEP_BLOCK + jnp.arange(STEP_BLOCK)
      xs = jax.lax.dynamic_slice_in_dim(x, k * STEP_BLOCK, STEP_BLOCK)  # [STEP_BLOCK, F]
      # Row i of the band (`in_band`): the columns j with |i (m - 1) - j (n - 1)| <= reach.
      # A one-step series (n - 1 = 0, divided by 1 instead) has row 0 alone: from -reach
      # to reach, every column once clipped, as the band says.
      along = steps[None] * last
      lo = -((reach - along) // jnp.maximum(n - 1, 1))
      hi = (along + reach) // jnp.maximum(n - 1, 1)
      lo, hi = jnp.clip(lo, 0, last), jnp.clip(hi, 0, last)
      level = log2[jnp.maximum(hi - lo, 0)]
      env = lambda t, pick: pick(t[level, rows, lo],  # noqa: E731
                                 t[level, rows, jnp.maximum(hi - (1 << level) + 1, 0)])
      hi_env, lo_env = env(upper, jnp.maximum), env(lower, jnp.minimum)  # [Nb, block, F]
      gap = jnp.maximum(xs[None] - hi_env, 0.0) + jnp.maximum(lo_env - xs[None], 0.0)
      return total + jnp.sum(jnp.where((steps < n)[None, :, None], gap * gap, 0.0), (1, 2))

    blocks = (n + STEP_BLOCK - 1) // STEP_BLOCK
    return jax.lax.fori_loop(0, blocks, block, jnp.zeros(lb.shape[0], x.dtype))

  return jax.lax.map(one, (a, la, band))


def dtw_lower_bounds(test: tuple[np.ndarray, np.ndarray],
                     train: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
  """[N_test, N_train] lower bounds of `distances(test, train, "dtw")`: the larger of
  LB_Keogh from either side."""
  (xa, la), (xb, lb) = test, train

  def side(x, lx, y, ly):
    y = np.where((np.arange(y.shape[1])[None, :] < ly[:, None])[..., None], y, 0.0)
    if not len(y) or not len(x):
      return np.zeros((len(x), len(y)), np.float32)
    levels = y.shape[1].bit_length()  # as many as `_sparse_max` stacks
    chunk = max(1, min(len(y), TABLE_FLOATS // (levels * y.shape[1] * y.shape[2])))
    lx32, out = lx.astype(np.int32), []
    x = np.pad(x, ((0, 0), (0, -x.shape[1] % STEP_BLOCK), (0, 0)))  # whole blocks
    for start in range(0, len(y), chunk):  # every chunk of one shape: one compile
      rows = np.minimum(np.arange(start, start + chunk), len(y) - 1)
      yc, lc = y[rows], ly[rows]
      out.append(np.asarray(_keogh(x, lx32, _bands(lx[:, None], lc[None, :]),
                                   _sparse_max(yc), -_sparse_max(-yc), lc.astype(np.int32))))
    return np.concatenate(out, 1)[:, :len(y)]

  return np.maximum(side(xa, la, xb, lb), side(xb, lb, xa, la).T)


def nearest(test: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
            distance: str, budget: float = float("inf")) -> np.ndarray | Skipped:
  """Index [N_test] of each test series' nearest training series (the first of tied
  ones), or `Skipped` when its cells (`NN_BUDGET` says which) would exceed `budget`.

  DTW is computed only where it can matter: each test series' training series in the
  order of their lower bounds (`dtw_lower_bounds`), skipping those whose bound is
  above the best distance found so far. The result equals the argmin of `distances`.
  """
  (xa, la), (xb, lb) = test, train
  if distance == "euclidean":
    cells = len(xa) * len(xb) * max(xa.shape[1], xb.shape[1])
    if cells > budget:
      return Skipped(f"{len(xa)} test x {len(xb)} training series x "
                     f"{max(xa.shape[1], xb.shape[1])} steps is {cells:.2g} distance "
                     f"cells, over the budget of {budget:.2g}")
    return np.argmin(distances(test, train, distance), axis=1)
  steps = max(la.max(), lb.max())
  if steps > MAX_STEPS:
    return Skipped(f"series of up to {steps} steps, over the {MAX_STEPS} that the DTW "
                   f"baseline computes")

  def over(cells: float) -> Skipped | None:
    if cells <= budget:
      return None
    return Skipped(f"{len(xa)} test x {len(xb)} training series of up to {steps} steps "
                   f"needs {cells:.2g} cells (lower bounds, then DTW where they cannot "
                   f"rule a pair out), over the budget of {budget:.2g}")

  cells = 2.0 * len(xa) * len(xb) * steps  # the lower bounds, from either side
  if skipped := over(cells):
    return skipped
  bound = dtw_lower_bounds(test, train)
  order = np.argsort(bound, axis=1, kind="stable")
  ranked = np.take_along_axis(bound, order, 1)
  best = np.full(len(xa), np.inf, np.float32)
  found = np.zeros(len(xa), np.int64)

  def candidates(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, train) pairs ranked start..stop - 1 whose bound is not above the best
    found, with a margin for float32 rounding: a bound equal to it may be a tie."""
    rank = np.arange(len(xb))[None]
    rows, ranks = np.nonzero((ranked <= (best * (1 + 1e-4) + 1e-6)[:, None])
                             & (rank >= start) & (rank < stop))
    return rows, order[rows, ranks]

  def visit(rows: np.ndarray, cols: np.ndarray) -> None:
    for i, j, v in zip(rows, cols, _dtw_pairs(test, train, rows, cols), strict=True):
      if v < best[i] or (v == best[i] and j < found[i]):
        best[i], found[i] = v, j

  # The first-ranked neighbours set a best distance per series; what can still beat
  # it bounds what the rest costs, before it is paid.
  rows = np.arange(len(xa))
  cells += _dtw_cells(la, lb[order[:, 0]])
  if skipped := over(cells):
    return skipped
  visit(rows, order[:, 0])
  rows, cols = candidates(1, len(xb))
  if skipped := over(cells + _dtw_cells(la[rows], lb[cols])):
    return skipped
  # Then the next few, which lower the best distances cheaply, then all that is left
  # in one call: the pairs of a call are blocked by their shapes, and a few large calls
  # compile a few shapes, where many small rounds would compile many.
  for start, stop in ((1, 4), (4, len(xb))):
    rows, cols = candidates(start, stop)
    if len(rows):
      visit(rows, cols)
  return found


def distances(test: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
              distance: str) -> np.ndarray:
  """[N_test, N_train] distances between z-normalised series (x [N, T, F], lengths [N])."""
  xa, xb = test[0], train[0]
  if distance == "euclidean":
    steps = max(xa.shape[1], xb.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0)))  # noqa: E731
    return np.asarray(_euclidean(pad(xa).reshape(len(xa), -1), pad(xb).reshape(len(xb), -1)))
  pairs_a, pairs_b = np.divmod(np.arange(len(xa) * len(xb)), len(xb))
  return _dtw_pairs(test, train, pairs_a, pairs_b).reshape(len(xa), len(xb))


def nearest_neighbour(test, train, labels: np.ndarray, n_classes: int, distance: str,
                      budget: float = float("inf")) -> np.ndarray | Skipped:
  """1-NN class scores [N_test, C] (log of one-hot, clipped) from `nearest`, or
  `Skipped` over the budget."""
  found = nearest(test, train, distance, budget)
  if isinstance(found, Skipped):
    return found
  nearest_ = labels[found]
  return np.log(np.where(np.eye(n_classes)[nearest_] > 0, 1.0, 1e-6)).astype(np.float32)


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
