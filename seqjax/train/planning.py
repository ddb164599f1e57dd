"""From a config to a run: every check, the task, mesh, model, optimizer and abstract state.

`plan(config)` is one model; `plan(config, members=...)` is a population: M
members of one config that differ only in array-valued hyperparameters
(`ARRAY_FIELDS`), stacked on a leading `model` axis (`population_members` makes
them from `config.population`; a sweep names its own). It checks everything before
anything is compiled, and returns a `Run` whose state is abstract;
`initialize` computes it.

Keys: one root key per model from its seed, split into data, init, dropout
and eval keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.config import configlib, validate
from seqjax.data import tasks
from seqjax.data.tasks import base
from seqjax.model import lstm, sequence
from seqjax.runtime import sharding
from seqjax.train import programs, workdirs

# What the members of a population may vary: arrays inside one compiled program.
ARRAY_FIELDS = ("seed", "model.kernel_gain", "model.recurrent_gain", "model.forget_bias",
                "train.learning_rate")


# Bounds that no run on one machine reaches; past them a value is a typo.
MAX_STEPS = 10**9
MAX_BATCH = 2**24
MAX_SEED = 2**32 - 1  # jax.random.key takes a uint32 seed


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
MAX_MEMBERS = 2**16
SELECT = ("all", "best", "ensemble")
MEMBER_LOOPS = ("vmap", "map", "auto")


def population_members(config: ml_collections.ConfigDict) -> list[dict[str, Any]] | None:
  """The members `config.population` asks for (override dicts), or None for one model:
  each of `seeds` seeds from `config.seed` on, at each of `learning_rates`."""
  p = config.population
  validate.integer_in("population.seeds", p.seeds, 1, MAX_MEMBERS)
  rates = tuple(p.learning_rates)
  for rate in rates:
    validate.positive_float("population.learning_rates", rate)
  members = [{"seed": config.seed + i, **({"train.learning_rate": rate} if rates else {})}
             for rate in rates or (None,) for i in range(p.seeds)]
  if len(members) == 1 and not rates:
    return None  # one model: the run is the config itself
  return members


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the task-independent fields; tasks check their own in `make`."""
  validate.finite_numbers(config)
  validate.integer_in("seed", config.seed, 0, MAX_SEED)
  if config.population.select not in SELECT:
    validate.fail("population.select", config.population.select,
                  f"must be one of {', '.join(SELECT)}")
  loop = config.population.get("loop", "vmap")  # absent from runs written before it
  if loop not in MEMBER_LOOPS:
    validate.fail("population.loop", loop,
                  f"must be one of {', '.join(MEMBER_LOOPS)}")
  sequence.validate_config(config.model)
  t = config.train
  validate.integer_in("train.batch_size", t.batch_size, 1, MAX_BATCH)
  validate.integer_in("train.epochs", t.epochs, 0, MAX_STEPS)
  if not t.epochs:
    validate.integer_in("train.steps", t.steps, 1, MAX_STEPS)
  validate.integer_in("train.min_steps", t.min_steps, 0, MAX_STEPS)
  validate.one_of("train.optimizer", t.optimizer, OPTIMIZERS)
  validate.one_of("train.schedule", t.schedule, SCHEDULES)
  validate.positive_float("train.learning_rate", t.learning_rate)
  validate.non_negative("train.warmup_steps", t.warmup_steps)
  validate.in_range("train.end_lr_factor", t.end_lr_factor, 0.0, 1.0)
  validate.non_negative("train.weight_decay", t.weight_decay)
  if t.weight_decay and t.optimizer != "adamw":
    # adam and sgd would silently train without it
    validate.fail("train.weight_decay", t.weight_decay,
                  f"applies to train.optimizer='adamw' only; got {t.optimizer!r} (a run saved "
                  "with both trained without it: resume it with train.weight_decay=0 and "
                  "allow_config_change=True)")
  validate.non_negative("train.grad_clip", t.grad_clip)
  for field in ("log_every", "checkpoint_every", "eval_batch_size"):
    validate.positive(f"train.{field}", t[field])
  validate.integer_in("train.early_stopping", t.early_stopping, 0, MAX_STEPS)
  validate.integer_in("train.early_stopping_steps", t.early_stopping_steps, 0, MAX_STEPS)
  if not isinstance(t.keep_best, bool):
    validate.fail("train.keep_best", t.keep_best, "must be True or False")
  if not isinstance(t.eval_every, int) or isinstance(t.eval_every, bool) or t.eval_every < -1:
    validate.fail("train.eval_every", t.eval_every, "must be a positive integer, 0 to "
                  "evaluate once at the end, or -1 once an epoch (finite datasets)")


def optimizer(t: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The learning-rate schedule over `total_steps`, the optimizer, and clipping."""
  if t.schedule == "constant":
    lr = optax.constant_schedule(t.learning_rate)
  elif t.schedule == "cosine":
    lr = optax.cosine_decay_schedule(t.learning_rate, total_steps, t.end_lr_factor)
  else:
    lr = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps,
                                            max(total_steps, t.warmup_steps + 1),
                                            t.learning_rate * t.end_lr_factor)
  if t.optimizer == "adam":
    opt = optax.adam(lr)
  elif t.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=t.weight_decay)
  else:
    opt = optax.sgd(lr, momentum=0.9)
  return optax.chain(optax.clip_by_global_norm(t.grad_clip), opt) if t.grad_clip else opt


@dataclasses.dataclass
class Run:
  """What a run is made of, before its first step.

  From `plan`, `state` and the keys are abstract (`jax.ShapeDtypeStruct`s
  with their shardings): enough to compile programs for them; `initialize`
  computes them. In a population (`members` set) the state, keys and `lr_scale` have
  a leading axis of `size` models.
  """
  config: ml_collections.ConfigDict
  task: base.Task
  model: sequence.SequenceModel
  mesh: jax.sharding.Mesh
  total: int  # steps
  state: programs.TrainState  # fresh, placed on the mesh
  state_sharding: Any
  data_key: jax.Array
  dropout_key: jax.Array
  eval_key: jax.Array
  init: Any  # jitted () -> (state, (data_key, dropout_key, eval_key))
  lr_scale: Any = None  # population: [M] learning rate / config's learning rate
  members: list[dict[str, Any]] | None = None  # population: each member's overrides

  @property
  def grid(self) -> bool:
    return self.members is not None

  @property
  def size(self) -> int:
    """Models trained together: 1, or the M members of a population."""
    return len(self.members) if self.grid else 1

  def loop_args(self) -> tuple:
    """What the train loop takes between the state and the step count."""
    if self.grid:
      return self.data_key, self.dropout_key, self.lr_scale
    return self.data_key, self.dropout_key


def _task_and_total(config):
  """(config with `train.eval_every` -1 made the steps of an epoch, task, total steps)."""
  validate_config(config)
  task = tasks.make(config.task, config.train.batch_size)
  if config.model.bidirectional and (task.causal or task.stateful_period or task.free_run
                                     or task.eval_free_run):
    validate.fail("model.bidirectional", True,
                  "this task predicts next values, carries the LSTM state across chunks or "
                  "generates step by step, and a bidirectional LSTM reads each sequence to its "
                  "end first (it would see the targets): set model.bidirectional=False")
  if task.head != "last" and config.model.pool != "last":
    validate.fail("model.pool", config.model.pool, "applies to one prediction a sequence, "
                  "and this task predicts every step: set model.pool='last'")
  if task.head != "last" and config.model.patch > 1:
    validate.fail("model.patch", config.model.patch, "applies to one prediction a sequence, "
                  "and this task predicts every step: set model.patch=1")
  if task.head != "last" and config.model.conv:
    validate.fail("model.conv", tuple(config.model.conv), "applies to one prediction a "
                  "sequence, and this task predicts every step: set model.conv=()")
  if config.model.get("view_dropout") and not task.level_features:
    validate.fail("model.view_dropout", config.model.view_dropout,
                  "acts on sequences read two ways (configs/data.py's task.normalize 'both', "
                  "or 'auto' where it chooses 'both'), and this task reads its inputs one way: "
                  "set model.view_dropout=0")
  t = config.train
  for field, used in (("epochs", t.epochs), ("eval_every", t.eval_every == -1)):
    if used and not task.steps_per_epoch:
      validate.fail(f"train.{field}", t[field],
                    "needs a finite dataset (this task config is online); set train.steps")
  if config.train.eval_every == -1:
    config = configlib.override(config, {"train.eval_every": task.steps_per_epoch})
  total = config.train.steps
  if config.train.epochs:  # whole epochs, at least min_steps
    epochs = max(config.train.epochs, -(-config.train.min_steps // task.steps_per_epoch))
    total = epochs * task.steps_per_epoch
  return config, task, total


def device_memory_bytes(device: jax.Device) -> int | None:
  """What one device may allocate: an accelerator's limit, a CPU's physical memory."""
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def check_memory(config: ml_collections.ConfigDict, task: base.Task, mesh, models_per_device: int
                 = 1) -> None:
  """Refuses, before compiling, a train step that cannot fit one device's memory.

  An estimate from the shapes: parameters with their gradient and two optimizer
  moments, the backward pass's stored residuals (`lstm.RESIDUALS_PER_STEP`
  [B, H] arrays a step and layer, plus the [B, 4H] input projection and its
  gradient), and two batches, for the device's share of the batch (and of a
  population's members). It names the field that dominates.
  """
  m = config.model
  sample = train_sample(task)
  _, steps, features = sample["x"].shape
  k = sequence.patch_of(m.patch, task.head, steps)  # the LSTM's steps and features
  steps, features = -(-steps // k), features * k
  batch = max(1, config.train.batch_size // mesh.shape[sharding.DATA])
  params = lstm.num_lstm_params(features, m.hidden, m.num_layers, m.bidirectional, m.merge)
  width = lstm.output_features(m.hidden, m.bidirectional, m.merge)
  for out in (*m.head_hidden, task.out_features):
    params += (width + 1) * out
    width = out
  kept = steps if not m.remat else 2 * int(steps ** 0.5) + 1
  # Per step and layer: the residuals, the [B, 4H] input projection and its gradient.
  activations = (m.num_layers * lstm.directions(m.bidirectional) * kept * batch * m.hidden
                 * (lstm.RESIDUALS_PER_STEP + 8))
  # The batch itself, twice: made (or sent) while the last one is still in use.
  batch_bytes = 2 * sum(math.prod(a.shape) * a.dtype.itemsize
                        for a in jax.tree.leaves(sample)) // mesh.shape[sharding.DATA]
  need = models_per_device * (4 * (4 * params + activations) + batch_bytes)
  have = device_memory_bytes(mesh.devices.flat[0])
  if have is None or need <= have:
    return
  gib = lambda n: f"{n / 2**30:.1f} GiB"
  field, value = (("model.hidden", m.hidden) if 16 * params >= 4 * activations + batch_bytes
                  else ("train.batch_size", config.train.batch_size))
  validate.fail(field, value, f"the train step needs about {gib(need)} per device "
                f"(parameters and optimizer {gib(16 * params * models_per_device)}, stored "
                f"activations {gib(4 * activations * models_per_device)}, batches "
                f"{gib(batch_bytes * models_per_device)}), more than the "
                f"{gib(have)} of {mesh.devices.flat[0].platform} memory")


def _placed(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def _check_members(config: ml_collections.ConfigDict, members: list[dict[str, Any]]) -> None:
  """Each member varies only `ARRAY_FIELDS`, with values those fields allow."""
  structural = {k for m in members for k in m if k not in ARRAY_FIELDS}
  if structural:
    raise validate.ConfigError(f"a population varies only {ARRAY_FIELDS}; got {sorted(structural)}")
  if config.model.chrono_tmax and any("model.forget_bias" in m for m in members):
    validate.fail("model.chrono_tmax", config.model.chrono_tmax,
                  "must be 0 to sweep model.forget_bias (chrono sets the gate biases)")
  for m in members:
    validate.finite_numbers({k: v for k, v in m.items()})
    if "seed" in m:
      validate.integer_in("seed", m["seed"], 0, MAX_SEED)
    for field in ("model.kernel_gain", "model.recurrent_gain", "train.learning_rate"):
      if field in m:
        validate.positive_float(field, m[field])


def plan(config: ml_collections.ConfigDict, workdir: str | None = None,
         members: list[dict[str, Any]] | None = None) -> Run:
  """Checks the config (and `workdir`), builds the task, mesh and model; the state abstract.

  `members`: None for one model. Else M models of `config`, each with its
  `ARRAY_FIELDS` overrides applied as arrays, trained as one vmapped program:
  each computes what `plan(configlib.override(config, member))` computes, to
  float tolerance (the same keys from its seed, the same data, and its gains
  applied as scales of the unit-gain initializers, `lstm.scale_gains`).

  Every check happens here, before anything is compiled. Raises validate.ConfigError.
  """
  if members is not None:
    _check_members(config, members)
  folds = config.task.get("folds")
  if type(folds) is int and folds >= 2 and members is None:
    # Folds are a population's, a fold a member: one model validates on the split.
    config = configlib.override(config, {"task.folds": 0})
  config, task, total = _task_and_total(config)
  mesh = sharding.make_mesh(config.mesh)
  if members is None and mesh.shape[sharding.MODEL] != 1:
    validate.fail("mesh.model", config.mesh.model, "must be 1 for a single model (the model "
                  "axis splits the members of a population); use mesh.data")
  if members is not None:
    sharding.check_divides(mesh, sharding.MODEL, len(members), "the number of members")
    if config.population.get("loop") == "map" and mesh.shape[sharding.MODEL] != 1:
      validate.fail("population.loop", "map", "must be vmap or auto where mesh.model splits "
                    "the members over devices (map runs them one after another on each)")
  sharding.check_divides(mesh, sharding.DATA, config.train.batch_size, "train.batch_size")
  per_device = 1 if members is None else len(members) // mesh.shape[sharding.MODEL]
  check_memory(config, task, mesh, per_device)
  if workdir is not None:
    workdirs.prepare(config, workdir)
  if members is None:
    return _plan_one(config, task, mesh, total)
  return _plan_population(config, task, mesh, total, members)


def train_sample(task: base.Task) -> base.Batch:
  """The shapes and dtypes of the task's training batches (`jax.ShapeDtypeStruct`s)."""
  return jax.eval_shape(lambda k: task.train_batch(k, jnp.int32(0)), jax.random.key(0))


def train_steps(task: base.Task) -> int:
  """The time steps of the task's training batches."""
  return train_sample(task)["x"].shape[1]


def _plan_one(config, task, mesh, total) -> Run:
  model = sequence.from_config(config.model, task.out_features, task.head, train_steps(task),
                               task.level_features)
  tx = optimizer(config.train, total)  # one object: the abstract and the real state match

  def init():  # the keys too: eager key ops would each compile a program of their own
    data_key, init_key, dropout_key, eval_key = jax.random.split(jax.random.key(config.seed), 4)
    return (programs.init_state(task, model, tx, data_key, init_key, config.train.batch_size),
            (data_key, dropout_key, eval_key))

  state, keys = jax.eval_shape(init)
  state_sharding, repl = sharding.state_shardings(mesh, state), sharding.replicated(mesh)
  return Run(config, task, model, mesh, total, _placed(state, state_sharding), state_sharding,
             *[_placed(k, repl) for k in keys],
             init=jax.jit(init, out_shardings=(state_sharding, repl)))


def _per_model(config, members, field, cast=float) -> np.ndarray:
  default = configlib.get(config, field)
  return np.asarray([cast(m.get(field, default)) for m in members])


def _plan_population(config, task, mesh, total, members) -> Run:
  # One model built with unit gains; each model's gains are applied as scales. Its scan
  # runs a device's share of the M models at each step, so the automatic unroll is
  # chosen for that share of M x batch.
  fixed = {"model.kernel_gain": 1.0, "model.recurrent_gain": 1.0}
  if not config.model.unroll:
    batch, steps = train_sample(task)["x"].shape[:2]
    per_device = (len(members) // mesh.shape[sharding.MODEL]) * max(
        1, batch // mesh.shape[sharding.DATA])
    fixed["model.unroll"] = lstm.auto_unroll(steps, per_device, config.model.hidden)
  unit = configlib.override(config, fixed)
  model = sequence.from_config(unit.model, task.out_features, task.head, train_steps(task),
                               task.level_features)
  tx = optimizer(config.train, total)
  per_model = {f: _per_model(config, members, f) for f in ARRAY_FIELDS[1:]}
  seeds = _per_model(config, members, "seed", int)
  lr_scale = per_model["train.learning_rate"] / config.train.learning_rate
  forget_base = config.model.forget_bias

  def one(seed, kernel_gain, recurrent_gain, forget_bias):
    data_key, init_key, dropout_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    state = programs.init_state(task, model, tx, data_key, init_key, config.train.batch_size)
    params = lstm.scale_gains(state.params, kernel_gain, recurrent_gain,
                              forget_bias - forget_base)
    state = state.replace(params=params, opt_state=tx.init(params), diverged_at=np.int32(-1))
    return state, (data_key, dropout_key, eval_key)

  # Per-model arrays are made by jitted functions placed on the mesh, so every
  # process of a multi-host job holds its part of the same global arrays. One member
  # after another (lax.map, not vmap): each member's initializers run unbatched, as
  # alone; a batched QR (the orthogonal initializer) hangs XLA's CPU runtime when
  # several CPU devices run it at once.
  def init():
    return jax.lax.map(lambda a: one(*a), (
        seeds, per_model["model.kernel_gain"], per_model["model.recurrent_gain"],
        per_model["model.forget_bias"]))

  state, keys = jax.eval_shape(init)
  split = NamedSharding(mesh, P(sharding.MODEL))
  state_sharding = sharding.state_shardings(mesh, state, population=True)
  lr_scale = jax.jit(lambda: lr_scale, out_shardings=split)()
  return Run(config, task, model, mesh, total, _placed(state, state_sharding), state_sharding,
             *[_placed(k, split) for k in keys],
             init=jax.jit(init, out_shardings=(state_sharding, split)),
             lr_scale=lr_scale, members=list(members))


def initialize(run: Run) -> Run:
  """`run` with its state and keys computed (compiles and runs the init program)."""
  state, keys = run.init()
  return dataclasses.replace(run, state=state, data_key=keys[0], dropout_key=keys[1],
                             eval_key=keys[2])


def setup(config: ml_collections.ConfigDict, workdir: str | None = None) -> Run:
  """`plan` then `initialize`: the run with its fresh, sharded state."""
  return initialize(plan(config, workdir))
