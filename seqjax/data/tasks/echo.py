"""echo: one-hot random integers; output the value `lag` steps back.

Two framings of the same stream s of integers in [0, classes):
- window mode (`window > lag`, the seed): each example is a window of the
  last `window` values, the label is the value `lag` steps before the
  window's end. The seed (`echo_random_integers`) takes the 20 windows of a
  fresh 25-value sequence in 4 batches of 5 through a stateful LSTM, then
  resets: `stateful=True` reproduces that.
- stream mode (`window == 1`): the LSTM reads one value per step and must
  output s[t - lag] at every step t >= lag, so the memory is only in the
  carry. Sequences of `seq_len` are trained in chunks of `chunk` steps with
  the carry threaded across chunks (truncated BPTT), reset per sequence.
Held-out streams come from a separate key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax.config import validate
from seqjax.data.tasks import base


def make(cfg: ml_collections.ConfigDict, batch_size: int) -> base.Task:
  """Builds the task from `config.task` (fields: see configs/echo.py)."""
  for field in ("classes", "seq_len", "window", "chunk", "eval_size"):
    validate.positive(f"task.{field}", cfg[field])
  validate.positive("task.lag", cfg.lag)
  seq_len, window, lag = cfg.seq_len, cfg.window, cfg.lag
  if window > seq_len:
    validate.fail("task.window", window, f"must be <= task.seq_len={seq_len}")
  if lag >= seq_len:
    validate.fail("task.lag", lag, f"must be < task.seq_len={seq_len}")
  if window == 1:
    return _stream_task(cfg, batch_size)
  if lag >= window:
    validate.fail("task.lag", lag, f"must be < task.window={window} (window mode), or set "
                  "task.window=1 for stream mode where the carry holds the memory")
  return _window_task(cfg, batch_size)


def _stream(k: jax.Array, n: int, seq_len: int, classes: int) -> jax.Array:
  return jax.random.randint(k, (n, seq_len), 0, classes)


def _window_task(cfg, batch_size):
  classes, seq_len, window, lag = cfg.classes, cfg.seq_len, cfg.window, cfg.lag
  # Seed framing: windows end at positions window..seq_len-1 (pandas shift + drop).
  ends = np.arange(window, seq_len)
  n_windows = ends.shape[0]

  def windows(s):  # [N, seq_len] -> x [N * n_windows, window, C], y [N * n_windows]
    idx = ends[:, None] - window + 1 + jnp.arange(window)[None, :]
    w = s[:, idx]
    return {"x": jax.nn.one_hot(w, classes).reshape(-1, window, classes),
            "y": w[..., -1 - lag].reshape(-1),
            "weight": jnp.ones((w.shape[0] * n_windows,), jnp.float32)}

  period = 0
  if cfg.stateful:
    if n_windows % batch_size:
      validate.fail("train.batch_size", batch_size,
                    f"must divide the {n_windows} windows of a sequence when task.stateful")
    period = n_windows // batch_size

    def batch_from(data, k, step):
      # Batch `step % period` of sequence `step // period`, in order (shuffle=False).
      seq = _stream(jax.random.fold_in(k, step // period), 1, seq_len, classes)
      batch = jax.tree.map(
          lambda a: jax.lax.dynamic_slice_in_dim(a, (step % period) * batch_size, batch_size),
          windows(seq))
      return batch | {"reset": step % period == 0}
  else:
    def batch_from(data, k, step):
      k = jax.random.fold_in(k, step)
      ks, kw = jax.random.split(k)
      batch = windows(_stream(ks, batch_size, seq_len, classes))
      pick = jax.random.choice(kw, batch["y"].shape[0], (batch_size,), replace=False)
      return jax.tree.map(lambda a: a[pick], batch)

  return base.Task(
      name="echo", in_features=classes, out_features=classes, head="last",
      batch_from=batch_from,
      eval_batch=lambda key, eval_key: windows(_stream(eval_key, cfg.eval_size, seq_len, classes)),
      loss_and_metrics=base.classification_loss, metric="accuracy", higher_is_better=True,
      stateful_period=period)


def _stream_task(cfg, batch_size):
  classes, seq_len, chunk, lag = cfg.classes, cfg.seq_len, cfg.chunk, cfg.lag
  if seq_len % chunk:
    validate.fail("task.chunk", chunk, f"must divide task.seq_len={seq_len}")
  period = seq_len // chunk

  def sequences(s):  # [N, seq_len] -> per-step inputs and labels
    target = jnp.roll(s, lag, axis=1)
    valid = (jnp.arange(seq_len) >= lag).astype(jnp.float32)
    return {"x": jax.nn.one_hot(s, classes), "y": target,
            "weight": jnp.broadcast_to(valid, s.shape)}

  def batch_from(data, k, step):
    seq = sequences(_stream(jax.random.fold_in(k, step // period), batch_size, seq_len, classes))
    batch = jax.tree.map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, (step % period) * chunk, chunk, axis=1), seq)
    return batch | {"reset": step % period == 0}

  return base.Task(
      name="echo", in_features=classes, out_features=classes, head="per_step",
      batch_from=batch_from,
      eval_batch=lambda key, eval_key: sequences(_stream(eval_key, cfg.eval_size, seq_len,
                                                         classes)),
      loss_and_metrics=base.classification_loss, metric="accuracy", higher_is_better=True,
      stateful_period=period)
