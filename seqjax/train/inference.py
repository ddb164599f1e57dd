"""Predicting with a trained run: `run = seqjax.load(workdir)`, `run.predict(x)`.

A run keeps what predicting needs: `config.json` (the model), `params/` (the
parameters: the best evaluation's with `train.keep_best`, else the last
step's) and, for a file-backed run, `data.json` (the kind, classes and the
normalisation fitted on its training split, undone here). Parameters are
restored onto this process's first device, so a run trained on a GPU or a
mesh of devices predicts on a laptop CPU.

Shape letters: N sequences, T time steps, F features, H forecast horizon.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.config import configlib, validate
from seqjax.data import feed, readers, tasks
from seqjax.data.tasks import base
from seqjax.data.tasks import data as data_task
from seqjax.model import rollout, sequence
from seqjax.runtime import files
from seqjax.train import checkpoint, planning, population, programs, workdirs


def _as_sequences(x, features: int, what: str = "x") -> np.ndarray:
  """[N, T], [N, T, F] (or a series [T] / [T, F] when F says so) -> float32 [N, T, F]."""
  x = np.asarray(x, np.float32)
  if x.ndim == 2 and features > 1 and x.shape[1] == features:
    x = x[None]  # one multivariate series [T, F]
  elif x.ndim == 1:
    x = x[None, :, None]
  elif x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3:
    raise validate.ConfigError(f"{what} must be [N, T] or [N, T, F]; got shape {x.shape}")
  if x.shape[2] != features:
    raise validate.ConfigError(f"{what} has {x.shape[2]} features a step; the run was trained "
                               f"on {features}")
  return x


class TrainedRun:
  """A trained run, ready to predict.

  Attributes:
    config: the run's config.
    model: its `sequence.SequenceModel`.
    params: its parameters (on this process's first device).
    step: the step they were saved at.
    info: `data.json` for a file-backed run, else None.
    task: the built-in task of a synthetic run, else None.
    member: the member of a population that predicts, or None (one model, or the
      ensemble of a population's members: `ensemble` True).
  """

  def __init__(self, workdir: str, member: int | None = None):
    wd = files.path(workdir)
    if not (wd / "config.json").exists():
      raise validate.ConfigError(f"--workdir={workdir!r}: no config.json (not a seqjax run)")
    self.workdir = workdir
    self.config = configlib.from_saved(workdirs.saved_config(workdir))
    info_path = wd / data_task.INFO_FILE
    self.info = files.read_json(info_path) if info_path.exists() else None
    if self.info is not None:
      self.task = None
      head = "per_step" if self.info["kind"] == "forecast" else "last"
      out, features = self.info["out_features"], self.info["in_features"]
      model_features = self.info.get("model_features", features)  # normalised both ways: 2F
      loss = data_task.loss_and_metrics(self.info)
      eval_free_run = self.info["horizon"] - 1 if self.info["kind"] == "forecast" else 0
    else:
      self.task = tasks.make(self.config.task, self.config.train.batch_size)
      head, out, features = self.task.head, self.task.out_features, self.task.in_features
      model_features = features
      loss, eval_free_run = self.task.loss_and_metrics, self.task.eval_free_run
    self.features = features
    steps = self.info.get("steps") if self.info else planning.train_steps(self.task)
    self.model = sequence.from_config(self.config.model, out, head, steps)
    device = jax.local_devices()[0]
    self._mesh = Mesh(np.asarray([device]).reshape(1, 1), ("data", "model"))
    place = NamedSharding(self._mesh, P())
    abstract = jax.eval_shape(lambda: self.model.init(
        jax.random.key(0), jnp.zeros((1, 1, model_features), jnp.float32))["params"])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=place),
                            abstract)
    results = files.read_json(wd / "results.json") if (wd / "results.json").exists() else {}
    size = 1
    try:
      store = (checkpoint.ParamsStore(wd / checkpoint.PARAMS_DIR)
               if (wd / checkpoint.PARAMS_DIR).exists() else None)
      if store is not None and store.latest_step() is None:  # made, nothing saved in it yet
        store.close()
        store = None
      if store is not None:
        try:
          saved = jax.tree.leaves(store.shapes(), is_leaf=lambda x: isinstance(x, tuple))
          first = jax.tree.leaves(abstract)[0]
          if saved and len(saved[0]) == first.ndim + 1:  # a population's, on a member axis
            size = saved[0][0]
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype,
                                                                   sharding=place), abstract)
          self.step, self.params = store.restore(abstract)
        finally:
          store.close()
      else:  # a run stopped before its end, or written before runs kept params/
        self.step, self.params = checkpoint.restore_latest_params(wd / "checkpoints", device)
    except FileNotFoundError:
      raise validate.ConfigError(
          f"--workdir={workdir!r}: the run has no saved parameters yet (it stopped before its "
          "first checkpoint); rerun its training command to train it, then predict") from None
    self.member, self.ensemble = None, False
    if size > 1:
      self._choose_member(workdir, results, size, member)
    classifies = (self.info["kind"] == "classification" if self.info
                  else self.task.classifies)
    shim = base.Task(name="predict", in_features=model_features, out_features=out, head=head,
                     batch_from=None, eval_batch=None, loss_and_metrics=loss, metric="",
                     eval_free_run=eval_free_run)
    def of_members(predict):  # an ensemble's: every member's predictions, averaged
      if not self.ensemble:
        return predict
      each = jax.vmap(predict, in_axes=(0, None))
      return lambda params, batch: population.ensemble(each(params, batch), classifies)

    self._apply = jax.jit(of_members(
        lambda params, batch: programs.apply(self.model, params, batch)[1]))
    self._evaluator = feed.Evaluator(of_members(programs.make_predict(self.model, shim,
                                                                      self._mesh)),
                                     loss, self._mesh, self.config.train.eval_batch_size)

  def _choose_member(self, workdir: str, results: dict, size: int, member: int | None) -> None:
    """A population predicts with `member`, else as `population.select` says: the
    ensemble of its members, or its best member by the validation metric."""
    select = results.get("population", {}).get("select", self.config.population.select)
    if member is None and select == "ensemble":  # of the members that did not diverge
      self.ensemble = True
      members = results.get("members") or [{}] * size
      keep = np.asarray([m.get("diverged_at") is None for m in members])
      if not keep.all():
        self.params = jax.tree.map(lambda a: a[keep], self.params)
      return
    if member is None:
      member = results.get("population", {}).get("best")
      if member is None:
        raise validate.ConfigError(f"--workdir={workdir!r}: a population with no best member "
                                   "yet (results.json is written when it finishes); name a "
                                   f"member, 0 to {size - 1}")
    if not 0 <= member < size:
      raise validate.ConfigError(f"member={member} is not a member of the population in "
                                 f"--workdir={workdir!r}; allowed: 0 to {size - 1}")
    self.member = member
    self.params = jax.tree.map(lambda a: a[member], self.params)

  @property
  def kind(self) -> str:
    """classification, regression or forecast (file-backed runs), else the task's name."""
    return self.info["kind"] if self.info else self.task.name

  # Sequence kinds: inputs to examples.

  def _examples(self, x, y=None, lengths=None) -> data_task.Examples:
    info = self.info
    if info["kind"] == "forecast":
      # Each series' last `window` valid steps (series may be NaN-padded to one length).
      x, w = _as_sequences(x, self.features), info["window"]
      if lengths is None:
        lengths = readers.padding_lengths("input", "x", x)
      lengths = np.asarray(lengths)
      if (lengths < w).any():
        i = int(np.argmax(lengths < w))
        raise validate.ConfigError(f"series {i} has {lengths[i]} steps; the run forecasts from "
                                   f"the last task.window={w}")
      x = x[np.arange(len(x))[:, None], lengths[:, None] - w + np.arange(w)[None, :]]
      _check_log_values(info, x, "every value")
      if y is None:  # prediction only: targets are not read (the last value stands in)
        y = np.repeat(x[:, -1:], info["horizon"], axis=1)
      y = _as_sequences(y, self.features, "truth")
      if y.shape[:2] != (len(x), info["horizon"]):
        raise validate.ConfigError(f"truth must be [N, task.horizon, F] = ({len(x)}, "
                                   f"{info['horizon']}, {self.features}); got {y.shape}")
      series = np.concatenate([x, y], axis=1)  # one example a series: its window, then truth
      if np.isnan(series).any():
        raise validate.ConfigError("forecast windows and their truth must hold no NaN")
      n, steps = len(series), series.shape[1]
      return data_task.forecast_examples(
          data_task.series_arrays(series, np.full(n, steps), info),
          (np.arange(n), np.zeros(n, np.int64)), info, eval_weight=True)
    x = _as_sequences(x, self.features)
    if why := data_task.check_steps(x.shape[1], info, "x"):
      raise validate.ConfigError(why)
    lengths = np.asarray(readers.padding_lengths("input", "x", x) if lengths is None
                         else lengths)
    n = len(x)
    if y is None:  # prediction only: targets are not read
      y = (np.zeros((n,), np.int32) if info["kind"] == "classification"
           else np.zeros((n, info["out_features"]), np.float32))
    elif info["kind"] == "classification":
      y = data_task.class_indices("y", "y", np.asarray(y), np.asarray(info["classes"]))[0]
    else:
      y = np.asarray(y, np.float32).reshape(n, -1)
    return data_task.sequence_examples(x, lengths, y, info)

  def _raw(self, x, lengths=None) -> np.ndarray:
    """The model's outputs for x, in its own (normalised) units; a forecast's with each
    window's level added back (see `data.Examples`)."""
    if self.info is None:
      x = _as_sequences(x, self.features)
      return np.asarray(self._apply(self.params, {"x": jnp.asarray(x)}))
    examples = self._examples(x, lengths=lengths)
    raw = self._evaluator.predict(self.params, examples)
    if self.info["kind"] == "forecast":
      raw = raw + examples.targets()["level"]  # [N, 1, F]
    return raw

  def predict(self, x, lengths=None) -> np.ndarray:
    """Predictions for inputs x [N, T, F] ([N, T] when F = 1; NaN-padded or `lengths` [N]).

    Returns:
      classification: labels [N] (the training file's values);
      regression: targets [N, K] in the file's units;
      forecast: x are the last steps of N series; the next H steps [N, H, F];
      a built-in task: its model's outputs (targets in their units for freq and mean).
    """
    raw = self._raw(x, lengths)
    info = self.info
    if info is None:
      if isinstance(self.task, base.ScalarTask):
        return raw * self.task.target_scale + self.task.target_shift
      return raw
    if info["kind"] == "classification":
      return np.asarray(info["classes"])[np.argmax(raw, -1)]
    if info["kind"] == "regression":
      return raw * np.asarray(info["y_scale"], np.float32) + np.asarray(info["y_shift"],
                                                                        np.float32)
    return self._units(raw[:, -info["horizon"]:])

  def predict_proba(self, x, lengths=None) -> np.ndarray:
    """classification: class probabilities [N, classes], in the order of `info["classes"]`."""
    if not self.info or self.info["kind"] != "classification":
      raise ValueError("predict_proba is for classification runs")
    return np.asarray(jax.nn.softmax(self._raw(x, lengths), -1))

  def _units(self, z: np.ndarray) -> np.ndarray:
    return z if self.info is None else data_task.to_units(z, self.info)

  def rollout(self, prefix, steps: int) -> np.ndarray:
    """A per-step model free-running: warm up on `prefix` [N, W, F], generate `steps` [N, steps, F].

    Inputs and outputs are in the file's units (a forecast run's normalisation
    is applied and undone).
    """
    if self.model.head != "per_step":
      raise ValueError(f"rollout needs a per-step model; this run's head is {self.model.head!r}")
    if self.ensemble:
      raise ValueError("rollout runs one model: load the population with member=<index>")
    prefix = _as_sequences(prefix, self.features, "prefix")
    level = 0.0
    if self.info is not None:
      _check_log_values(self.info, prefix, "every value of the prefix")
      prefix = data_task.normalize(data_task.model_values(prefix, self.info),
                                   np.full(len(prefix), prefix.shape[1]),
                                   self.info["x_shift"], self.info["x_scale"])
      if self.info.get("relative"):  # relative to the prefix's last value, as trained
        level = prefix[:, -1:]
    return self._units(np.asarray(rollout.rollout(self.model, self.params,
                                                  jnp.asarray(prefix - level), steps)) + level)

  def evaluate(self, x, y, lengths=None) -> dict[str, float]:
    """The run's metrics on (x, y) in the file's units, as training computed its test figures.

    Sequences: x [N, T, F], y labels [N] or targets [N, K]. Forecast: x the
    windows [N, W, F], y their next H steps [N, H, F].
    """
    if self.info is None:
      raise ValueError("evaluate is for runs trained on files (configs/data.py)")
    return self._evaluator(self.params, self._examples(x, y, lengths))[1]

  def test_split(self) -> tuple[np.ndarray, ...]:
    """The run's test split, read again from its files: what `evaluate` takes
    (x, y[, lengths])."""
    if self.info is None:
      raise ValueError("test_split is for runs trained on files (configs/data.py)")
    return data_task.make(self.config.task, self.config.train.batch_size).test_raw

  held_out = test_split  # its former name


def _check_log_values(info: dict, values: np.ndarray, what: str) -> None:
  """A ConfigError unless `values` are above 0 where the run learned their log."""
  if info.get("log") and not (values > 0).all():
    raise validate.ConfigError("this run learned the log of its series (task.log=True): "
                               f"{what} must be above 0")


def load(workdir: str | os.PathLike, member: int | None = None) -> TrainedRun:
  """The trained run in `workdir`, ready to predict (see `TrainedRun`); for a population,
  `member` picks one member instead of what `population.select` says."""
  return TrainedRun(str(workdir), member)


__all__ = ["TrainedRun", "load"]
