"""PNG plots written to the workdir (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seqjax.runtime import files  # noqa: E402


def _save(fig, path: str) -> str:
  """Writes `fig` as a PNG to `path`, local or on an object store (epath)."""
  fig.tight_layout()
  with files.path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)
  return path


def loss_curves(records: list[dict], path: str, metric: str) -> str:
  """Train loss and held-out metric against step, log scale."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  train = [r for r in records if r["split"] == "train"]
  held = [r for r in records if r["split"] == "eval"]
  axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
  axes[0].set_title("training loss")
  if held:
    axes[1].plot([r["step"] for r in held], [r[metric] for r in held], "o-", label=metric)
  axes[1].set_title(f"held-out {metric}")
  for ax in axes:
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
  return _save(fig, path)


def predicted_vs_true(true: np.ndarray, pred: np.ndarray, path: str, unit: str) -> str:
  """Scatter of held-out predictions against targets, with the identity line."""
  fig, ax = plt.subplots(figsize=(4.6, 4.3))
  ax.scatter(true, pred, s=6, alpha=0.5)
  lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
  ax.plot([lo, hi], [lo, hi], "k--", lw=1)
  mae = float(np.mean(np.abs(pred - true)))
  ax.set_title(f"held-out {unit}: MAE {mae:.4f}")
  ax.set_xlabel(f"true {unit}")
  ax.set_ylabel(f"predicted {unit}")
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
  axes[1].set_title(f"held-out RMSE vs horizon ({prefix.shape[0]} sequences)")
  axes[1].set_xlabel("steps after warm-up")
  for ax in axes:
    ax.grid(alpha=0.3)
  return _save(fig, path)


def metric_vs_gain(curves: dict[str, tuple[list[float], list[float]]], path: str,
                   metric: str) -> str:
  """Median held-out metric against init gain, one line per group (e.g. length)."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for label, (gains, values) in curves.items():
    ax.plot(gains, values, "o-", label=label)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("orthogonal init gain")
  ax.set_ylabel(f"held-out {metric} (median over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return _save(fig, path)
