"""Cross-validation folds for a population: each member validates on a fold of its own.

With few labelled sequences a validation split of a tenth is two or three of
them: too few to choose a step by, and those few are never trained on. With
folds, every labelled sequence is in one of K folds (dealt out class by class,
so each fold holds the classes in their shares); member m of a
population validates on fold m % K and trains on the other K - 1. Every member
keeps its own best step, and each sequence trains most of the members.

The members read the same batches of every labelled sequence; `view` gives each
member its own weights: outside its fold while training, inside it while
validating.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def assign(n: int, k: int, labels: np.ndarray | None = None) -> np.ndarray:
  """Folds [n] int32 of n examples, dealt out in turn; with class `labels` [n], class by
  class, each continuing the turn where the one before ended, so that every fold holds
  every class in its share (as scikit-learn's StratifiedKFold)."""
  order = np.arange(n) if labels is None else np.argsort(labels, kind="stable")
  out = np.empty(n, np.int32)
  out[order] = np.arange(n) % k
  return out


def view(batch: dict[str, Any], member: Any, folds: int, training: bool) -> dict[str, Any]:
  """Member `member`'s view of a batch whose examples carry folds (`batch["fold"]` [B]):
  weight kept outside fold member % folds while training, inside it while validating.
  A batch without folds (a test split, a generated task) is every member's as it is.
  Works on numpy and JAX arrays (`member` may be traced)."""
  if not folds or "fold" not in batch:
    return batch
  own = batch["fold"] == member % folds
  weight = batch["weight"]
  keep = (own if not training else ~own).astype(weight.dtype)
  return {**batch, "weight": weight * keep.reshape(keep.shape + (1,) * (weight.ndim - 1))}
