"""PNG plots written to the workdir (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from seqjax.runtime import files  # noqa: E402


def _save(fig, path: str) -> str:
  """Writes `fig` as a PNG to `path`, local or on an object store (epath). The PNG's
  Title is the figure's headline (its suptitle, else its first title), so a program can
  read the figure a picture shows."""
  fig.tight_layout()
  title = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
  with files.path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110, metadata={"Title": title})
  plt.close(fig)
  return path


def loss_curves(records: list[dict], path: str, metric: str) -> str:
  """The training loss and the validation metric against step (a population's: the
  median over its members). Losses and errors on a log scale, an accuracy on a linear one."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  train = [r for r in records if r["split"] == "train"]
  held = [r for r in records if r["split"] == "validation"]
  population = any("/" in k for r in held for k in r)
  median = " (median over members)" if population else ""
  axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], ".-", label="training")
  axes[0].set_title("training loss" + median)
  axes[0].set_ylabel("loss")
  axes[0].set_yscale("log")
  if held:
    axes[1].plot([r["step"] for r in held], [r[metric] for r in held], "o-", ms=3,
                 color="tab:orange", label="validation")
  axes[1].set_title(f"validation {metric}" + median)
  axes[1].set_ylabel(metric)
  if metric != "accuracy":
    axes[1].set_yscale("log")
  for ax in axes:
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


def predicted_vs_true(true: np.ndarray, pred: np.ndarray, path: str, unit: str) -> str:
  """Scatter of test predictions against targets, with the identity line."""
  fig, ax = plt.subplots(figsize=(4.6, 4.3))
  ax.scatter(true, pred, s=6, alpha=0.5)
  lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
  ax.plot([lo, hi], [lo, hi], "k--", lw=1)
  mae = float(np.mean(np.abs(pred - true)))
  ax.set_title(f"test {unit}: MAE {mae:.4f}")
  ax.set_xlabel(f"true {unit}")
  ax.set_ylabel(f"predicted {unit}")
  return _save(fig, path)


def targets_vs_predicted(true: np.ndarray, pred: np.ndarray, names: list[str],
                         path: str) -> str:
  """One scatter a target of the test split's predictions [N, K] against the truth
  [N, K], with the identity line; each panel titled with its MAE, the figure with the
  mean over targets (results.json's test MAE)."""
  k = true.shape[1]
  cols = min(k, 3)
  rows = -(-k // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), squeeze=False)
  for j, ax in enumerate(axes.flat):
    if j >= k:
      ax.axis("off")
      continue
    ax.scatter(true[:, j], pred[:, j], s=10, alpha=0.6, label="a test sequence")
    lo = float(min(true[:, j].min(), pred[:, j].min()))
    hi = float(max(true[:, j].max(), pred[:, j].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = true")
    ax.set_title(f"{names[j]}: MAE {np.mean(np.abs(pred[:, j] - true[:, j])):.4g}")
    ax.set_xlabel(f"true {names[j]}")
    ax.set_ylabel(f"predicted {names[j]}")
    ax.grid(alpha=0.3)
  axes.flat[0].legend(loc="upper left", fontsize=8)
  fig.suptitle(f"test split, {len(true)} sequences: MAE {np.mean(np.abs(pred - true)):.4g}"
               + (" (mean over targets)" if k > 1 else ""))
  return _save(fig, path)


def confusion(true: np.ndarray, pred: np.ndarray, names: list[str], path: str) -> str:
  """The test split's confusion matrix: counts of each true class (rows) predicted as
  each class (columns), the accuracy in the title."""
  n = len(names)
  counts = np.zeros((n, n), np.int64)
  np.add.at(counts, (true, pred), 1)
  size = min(2.5 + 0.45 * n, 12)
  fig, ax = plt.subplots(figsize=(size + 1.2, size))
  image = ax.imshow(counts, cmap="Blues")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test sequences")
  if n <= 30:  # the counts, where they can be read
    for i, j in np.ndindex(n, n):
      if counts[i, j]:
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                color="white" if counts[i, j] > counts.max() / 2 else "black")
  ticks = np.arange(n)
  labels = [str(c)[:14] for c in names]
  ax.set_xticks(ticks, labels, rotation=90 if n > 6 else 0, fontsize=8)
  ax.set_yticks(ticks, labels, fontsize=8)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(f"test split, {len(true)} sequences: accuracy {np.mean(true == pred):.3f}")
  return _save(fig, path)


def sequences(inputs: np.ndarray, true: np.ndarray, pred: np.ndarray, path: str,
              title: str, split_at: int | None = None) -> str:
  """A few sequences: truth vs prediction (e.g. next step, or a rollout after `split_at`)."""
  n = min(3, true.shape[0])
  fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n), squeeze=False)
  for i, ax in enumerate(axes[:, 0]):
    ax.plot(np.arange(len(true[i])), true[i], "k-", lw=1.5, label="truth")
    ax.plot(np.arange(len(pred[i])), pred[i], "r--", lw=1.2, label="prediction")
    if split_at is not None:
      ax.axvline(split_at, color="gray", lw=0.8)
    ax.grid(alpha=0.3)
  axes[0, 0].legend(loc="upper right")
  axes[0, 0].set_title(title)
  axes[-1, 0].set_xlabel("step")
  return _save(fig, path)


def rollout(prefix: np.ndarray, truth: np.ndarray, preds: np.ndarray, path: str) -> str:
  """Truth vs free-running rollout for a few sequences, and RMSE against horizon."""
  warm, n = prefix.shape[1], truth.shape[1]
  fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
  t_warm, t_gen = np.arange(warm), np.arange(warm, warm + n)
  for i in range(min(3, prefix.shape[0])):
    line, = axes[0].plot(t_warm, prefix[i], lw=1.5)
    axes[0].plot(t_gen, truth[i], color=line.get_color(), lw=1.5, alpha=0.5)
    axes[0].plot(t_gen, preds[i], "--", color=line.get_color(), lw=1.2)
  axes[0].axvline(warm, color="gray", lw=0.8)
  axes[0].set_title("warm-up (solid), truth (faint) and free-running rollout (dashed)")
  axes[0].set_xlabel("step")
  rmse = np.sqrt(np.mean((preds - truth) ** 2, axis=0))
  axes[1].plot(np.arange(1, n + 1), rmse)
  axes[1].set_yscale("log")
  axes[1].set_title(f"test RMSE vs horizon ({prefix.shape[0]} sequences)")
  axes[1].set_xlabel("steps after warm-up")
  for ax in axes:
    ax.grid(alpha=0.3)
  return _save(fig, path)


# A forecast's picture draws at most this many features, a row each.
FORECAST_ROWS = 4


def forecast(series: np.ndarray, times: np.ndarray | None, which: np.ndarray,
             origins: np.ndarray, preds: np.ndarray, baseline: np.ndarray,
             errors: np.ndarray, baseline_errors: np.ndarray, baseline_name: str,
             names: list[str], path: str) -> str:
  """A forecast's test split, a row per feature (the first `FORECAST_ROWS`): the first
  test series with its test period shaded, the forecast from its last test origin beside
  the best baseline's; and the MAE by steps ahead of both, over every test origin. The
  title's MAE is over every feature (results.json's test MAE).

  series [T, F]: the first test series; times [T] or None (steps); which, origins [N]:
  each test window's series and first forecast step; preds, baseline, errors,
  baseline_errors [N, H, F]: forecasts and absolute errors in the file's units; names [F].
  """
  shown = min(series.shape[1], FORECAST_ROWS)
  fig, axes = plt.subplots(shown, 2, figsize=(12, 0.6 + 3.3 * shown), squeeze=False,
                           gridspec_kw={"width_ratios": [2.2, 1]})
  on_first = np.flatnonzero(which == which[0])
  h = preds.shape[1]
  end = int(origins[on_first].max()) + h
  x = (times[:end] if times is not None and len(times) >= end
       else np.arange(end))
  first, last = int(origins[on_first].min()), on_first[np.argmax(origins[on_first])]
  ahead = x[int(origins[last]):int(origins[last]) + h]
  steps = np.arange(1, h + 1)
  for j in range(shown):
    ax, name = axes[j, 0], names[j]
    ax.plot(x, series[:end, j], "k-", lw=1.3, label=f"{name} (history and test truth)")
    ax.axvspan(x[first], x[end - 1], color="tab:blue", alpha=0.07, label="test period")
    ax.plot(ahead, preds[last, :, j], "o-", color="tab:red", ms=3, lw=1.5,
            label="forecast (last test origin)")
    ax.plot(ahead, baseline[last, :, j], "s--", color="tab:gray", ms=3, lw=1.2,
            label=f"{baseline_name} (best baseline)")
    ax.set_xlabel("time" if times is not None else "step")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if shown > 1:
      ax.set_title(f"{name}: test MAE {errors[..., j].mean():.4g}; "
                   f"{baseline_name} {baseline_errors[..., j].mean():.4g}", fontsize=10)
    if times is not None and times.dtype.kind == "M":  # dates: slanted, to fit
      ax.tick_params(axis="x", labelrotation=30)
    by_step = axes[j, 1]
    by_step.plot(steps, errors[..., j].mean(axis=0), "o-", color="tab:red", ms=3,
                 label="forecast")
    by_step.plot(steps, baseline_errors[..., j].mean(axis=0), "s--", color="tab:gray", ms=3,
                 label=baseline_name)
    by_step.set_xlabel("steps ahead")
    by_step.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    by_step.set_ylabel(f"test MAE ({name})")
    by_step.set_title("test MAE by steps ahead", fontsize=10)
    by_step.grid(alpha=0.3)
    by_step.legend(fontsize=8)
  more = (f"; the first {shown} of {series.shape[1]} features drawn"
          if series.shape[1] > shown else "")
  fig.suptitle(f"test MAE {errors.mean():.4g} over {len(preds)} forecast origins; "
               f"{baseline_name} {baseline_errors.mean():.4g}{more}")
  return _save(fig, path)


def metric_vs_gain(curves: dict[str, tuple[list[float], list[float]]], path: str,
                   metric: str) -> str:
  """Median test metric against init gain, one line per group (e.g. length), the legend
  beside the plot."""
  fig, ax = plt.subplots(figsize=(7.5, 3.8))
  for label, (gains, values) in curves.items():
    ax.plot(gains, values, "o-", label=label)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("orthogonal init gain")
  ax.set_ylabel(f"test {metric} (median over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the lines
  return _save(fig, path)
