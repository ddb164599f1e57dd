"""`train_and_evaluate(config, workdir)`: model, jitted step, eval, checkpoints, logs.

Keys: one root key from `config.seed`, split into data, init and dropout keys;
step `s` uses `fold_in(key, s)`, so a run resumed at step k continues exactly
as if it had never stopped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import os
import shutil
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.experimental import multihost_utils

from seqjax import (
  checkpoint,
  configlib,
  files,
  lstm,
  models,
  numerics,
  rollout,
  sharding,
  tasks,
  validate,
  writers,
)
from seqjax.tasks import base

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MIN_FREE_MB = 64
# Seconds of training per device call once a call has been timed (see the run loop).
CALL_SECONDS = 0.5

# Fields a resumed run may change: where it runs (the mesh), not what it computes.
RESUMABLE_PREFIXES = ("allow_config_change", "mesh.")


class TrainState(train_state.TrainState):
  """Flax TrainState plus the LSTM carry threaded by stateful training."""
  carry: Any = None


def itstime(step: int, every: int, total: int) -> bool:
  """True every `every` steps and always on the last step (big_vision)."""
  return step == total or (every > 0 and step % every == 0)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the task-independent fields; tasks check their own in `make`."""
  m, t = config.model, config.train
  for field in ("hidden", "num_layers"):
    validate.positive(f"model.{field}", m[field])
  for width in m.head_hidden:
    validate.positive("model.head_hidden", width)
  validate.one_of("model.activation", m.activation, models.ACTIVATIONS)
  validate.one_of("model.out_activation", m.out_activation, models.ACTIVATIONS)
  validate.in_range("model.dropout", m.dropout, 0.0, 0.99)
  for field in ("kernel_init", "recurrent_init", "bias_init"):
    validate.one_of(f"model.{field}", m[field], lstm.INITIALIZERS)
  validate.positive_float("model.kernel_gain", m.kernel_gain)
  validate.positive_float("model.recurrent_gain", m.recurrent_gain)
  validate.non_negative("model.chrono_tmax", m.chrono_tmax)
  validate.non_negative("model.unroll", m.unroll)
  validate.one_of("model.dtype", m.dtype, DTYPES)
  validate.one_of("model.precision", m.precision, numerics.PRECISIONS)
  validate.positive("train.batch_size", t.batch_size)
  validate.non_negative("train.epochs", t.epochs)
  if not t.epochs:
    validate.positive("train.steps", t.steps)
  validate.one_of("train.optimizer", t.optimizer, OPTIMIZERS)
  validate.one_of("train.schedule", t.schedule, SCHEDULES)
  validate.positive_float("train.learning_rate", t.learning_rate)
  validate.non_negative("train.warmup_steps", t.warmup_steps)
  validate.in_range("train.end_lr_factor", t.end_lr_factor, 0.0, 1.0)
  validate.non_negative("train.weight_decay", t.weight_decay)
  validate.non_negative("train.grad_clip", t.grad_clip)
  for field in ("log_every", "checkpoint_every", "eval_batch_size"):
    validate.positive(f"train.{field}", t[field])
  if not isinstance(t.eval_every, int) or isinstance(t.eval_every, bool) or t.eval_every < 0:
    validate.fail("train.eval_every", t.eval_every,
                  "must be a positive integer, or 0 to evaluate once at the end")


def create_model(config: ml_collections.ConfigDict, task: base.Task) -> models.SequenceModel:
  m = config.model
  return models.SequenceModel(
      hidden=m.hidden, out_features=task.out_features, num_layers=m.num_layers, head=task.head,
      head_hidden=tuple(m.head_hidden), activation=m.activation, out_activation=m.out_activation,
      dropout=m.dropout, kernel_init=lstm.initializer(m.kernel_init, m.kernel_gain),
      recurrent_init=lstm.initializer(m.recurrent_init, m.recurrent_gain),
      bias_init=lstm.initializer(m.bias_init), forget_bias=m.forget_bias,
      chrono_tmax=m.chrono_tmax, unroll=m.unroll,
      dtype=DTYPES[m.dtype], precision=m.precision)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  t = config.train
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


def init_state(config: ml_collections.ConfigDict, task: base.Task, model: models.SequenceModel,
               data_key: jax.Array, init_key: jax.Array, total_steps: int,
               tx: optax.GradientTransformation | None = None) -> TrainState:
  """Fresh parameters, optimizer state and (for stateful tasks) a zero carry.

  `tx`: the optimizer (default `create_optimizer(config, total_steps)`); it is
  part of the state's tree structure, so programs compiled for one state take
  another only if both hold the same `tx` object.
  """
  sample = task.train_batch(data_key, jnp.zeros((), jnp.int32))
  sample = jax.tree.map(lambda a: a[:1] if a.ndim else a, sample)
  params = model.init(init_key, sample["x"], mask=sample.get("mask"))["params"]
  carry = None
  if task.stateful_period:
    carry = lstm.zero_carry((config.model.num_layers, config.train.batch_size), config.model.hidden)
  tx = create_optimizer(config, total_steps) if tx is None else tx
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, carry=carry)


def _apply(model, params, batch, carry=None, *, train=False, rng=None):
  return model.apply({"params": params}, batch["x"], carry, mask=batch.get("mask"),
                     train=train, rngs={"dropout": rng} if train else None)


def _forward_train(model, task, params, batch, carry, rng):
  """Training predictions: teacher forced, then `task.free_run` fed-back steps."""
  carry, preds = _apply(model, params, batch, carry, train=True, rng=rng)
  if task.free_run:
    carry, generated = rollout.free_run(model, params, carry, preds[:, -1], task.free_run)
    preds = jnp.concatenate([preds, generated], axis=1)
  return carry, preds


def make_train_step(model: models.SequenceModel, task: base.Task, mesh=None):
  """The pure step `(state, data_key, dropout_key, lr_scale, data) -> (state, metrics)`.

  The batch is generated inside it, on device, from `data_key` and the step
  (and `data`, the task's `train_data(data_key)`, built here when None);
  with a `mesh`, each device generates only its shard of the batch.
  `lr_scale` multiplies the optimizer's updates (a per-model learning rate in
  vmapped grids; 1.0 for a single run, which leaves the updates bit-identical).
  """
  stateful = task.stateful_period > 0

  def train_step(state: TrainState, data_key: jax.Array, dropout_key: jax.Array,
                 lr_scale: jax.Array | float = 1.0, data: Any = None):
    batch = (task.train_batch(data_key, state.step) if data is None
             else task.batch_from(data, data_key, state.step))
    if mesh is not None:
      batch = sharding.constrain_batch(mesh, batch)
    carry = None
    if stateful:
      carry = jax.tree.map(lambda c: jnp.where(batch["reset"], jnp.zeros_like(c), c), state.carry)

    def loss_fn(params):
      new_carry, preds = _forward_train(model, task, params, batch, carry,
                                        jax.random.fold_in(dropout_key, state.step))
      loss, metrics = task.loss_and_metrics(preds, batch)
      return loss, (metrics, new_carry)

    (loss, (metrics, new_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale, updates)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state)
    if stateful:
      state = state.replace(carry=jax.lax.stop_gradient(new_carry))
    metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(state.params)}
    return state, metrics

  return train_step


def make_train_loop(model: models.SequenceModel, task: base.Task, mesh=None):
  """`(state, data_key, dropout_key, num_steps) -> (state, totals)`: many steps, one call.

  A device-side while loop runs up to `num_steps` train steps (a traced
  count: one compiled program serves every call), builds the task's
  `train_data` once for all of them, and stops early after the first step
  whose metrics are not finite. Small steps cost less than a dispatch from
  Python, so the run loop hands this ~`CALL_SECONDS` of steps at a time.

  totals: {"sums": {name: sum over the steps run}, "steps": steps run,
  "finite": False if the last step run had a NaN/Inf metric}.
  """
  train_step = make_train_step(model, task, mesh)

  def train_loop(state, data_key, dropout_key, num_steps):
    data = task.train_data(data_key)
    step = lambda st: train_step(st, data_key, dropout_key, data=data)
    zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(step, state)[1])

    def body(carry):
      i, state, sums, _ = carry
      state, metrics = step(state)
      finite = jnp.all(jnp.stack([jnp.isfinite(m).all() for m in jax.tree.leaves(metrics)]))
      return i + 1, state, jax.tree.map(jnp.add, sums, metrics), finite

    n, state, sums, finite = jax.lax.while_loop(
        lambda c: (c[0] < num_steps) & c[3], body, (jnp.int32(0), state, zeros, jnp.bool_(True)))
    return state, {"sums": sums, "steps": n, "finite": finite}

  return train_loop


def make_evaluate(model: models.SequenceModel, task: base.Task, batch_size: int, mesh=None):
  """`(params, eval_set) -> (preds, metrics)`: the held-out set in one call, to jit.

  The set [N, ...] is cut into batches of `batch_size` (the last one padded
  with repeats of the last example, then dropped), run under `lax.map` so that
  memory is bounded by one batch; metrics are the task's, over all N.
  """
  def predict(params, batch):
    if mesh is not None:
      batch = sharding.constrain_batch(mesh, batch)
    return _apply(model, params, batch)[1]

  def evaluate(params, eval_set):
    n = jax.tree.leaves(eval_set)[0].shape[0]
    if n <= batch_size:
      preds = predict(params, eval_set)
    else:
      batches, pad = -(-n // batch_size), -n % batch_size

      def split(a):
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]) if pad else a
        return a.reshape(batches, batch_size, *a.shape[1:])

      preds = jax.lax.map(lambda b: predict(params, b), jax.tree.map(split, eval_set))
      preds = preds.reshape(batches * batch_size, *preds.shape[2:])[:n]
    return preds, task.loss_and_metrics(preds, eval_set)[1]

  return evaluate


class Preempted(Exception):  # noqa: N818  (a stop, not an error)
  """SIGTERM arrived; a checkpoint of the current step was saved before stopping."""


class _SigtermFlag:
  """Records SIGTERM (a preemption notice) while training, instead of dying mid-step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates and checks `workdir` (local, or gs://... through epath) before anything is compiled.

  Raises ConfigError if it cannot be written, has too little free space, or
  holds checkpoints of a different config (unless `config.allow_config_change`).
  """
  root = files.path(workdir)
  # A name of its own: the processes of a multi-host job may share the workdir.
  probe = root / f".write_probe.{jax.process_index()}.{os.getpid()}"
  try:
    root.mkdir(parents=True, exist_ok=True)
    try:
      probe.write_bytes(b"x" * 4096)
    finally:
      if probe.exists():
        probe.unlink()
  except OSError as e:
    raise validate.ConfigError(f"--workdir={workdir!r} is not writable: {e}") from None
  if files.is_local(root):  # an object store has no free-space figure (and no limit)
    free_mb = shutil.disk_usage(workdir).free / 2**20
    if free_mb < MIN_FREE_MB:
      raise validate.ConfigError(f"--workdir={workdir!r} has {free_mb:.0f} MiB free; at least "
                                 f"{MIN_FREE_MB} MiB are needed for checkpoints and metrics")
  path = root / "config.json"
  if path.exists() and (root / "checkpoints").is_dir():
    before = _flatten(files.read_json(path))
    now = _flatten(json.loads(config.to_json_best_effort()))
    # A field seqjax gained after the run was written (model.precision, say) is not a
    # change when the run now has that field's default value.
    defaults = _flatten(json.loads(configlib.base_config().to_json_best_effort()))
    changed = [f"{k}: {before.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
               for k in sorted(set(before) | set(now))
               if not k.startswith(RESUMABLE_PREFIXES) and before.get(k) != now.get(k)
               and not (k not in before and k in defaults and now.get(k) == defaults[k])]
    if changed and not config.allow_config_change:
      raise validate.ConfigError(
          f"--workdir={workdir!r} holds a run with a different config ({'; '.join(changed)}); "
          "use a new --workdir, or --config.allow_config_change=True to resume anyway")
  if sharding.is_writer():
    files.write_text(path, config.to_json_best_effort(indent=2))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


@dataclasses.dataclass
class Run:
  """What a run is made of, before its first step (see `setup`).

  From `plan`, `state` and the keys are abstract (`jax.ShapeDtypeStruct`s
  with their shardings): enough to compile programs for them; `initialize`
  computes them.
  """
  task: base.Task
  model: models.SequenceModel
  mesh: jax.sharding.Mesh
  total: int  # steps
  state: TrainState  # fresh, placed on the mesh
  state_sharding: Any
  data_key: jax.Array
  dropout_key: jax.Array
  eval_key: jax.Array
  init: Any  # jitted () -> (state, (data_key, dropout_key, eval_key))


def plan(config: ml_collections.ConfigDict, workdir: str | None = None) -> Run:
  """Checks the config (and `workdir`), builds the task, mesh and model; the state abstract.

  Every check happens here, before anything is compiled. Raises validate.ConfigError.
  """
  validate_config(config)
  task = tasks.make(config.task, config.train.batch_size)
  if config.train.epochs and not task.steps_per_epoch:
    validate.fail("train.epochs", config.train.epochs,
                  "needs a finite dataset (this task config is online); set train.steps")
  total = config.train.epochs * task.steps_per_epoch if config.train.epochs else config.train.steps
  mesh = sharding.make_mesh(config.mesh)
  if mesh.shape[sharding.MODEL] != 1:
    validate.fail("mesh.model", config.mesh.model, "must be 1 for a single run (the model axis "
                  "splits the models of a sweep grid); use mesh.data")
  sharding.check_divides(mesh, sharding.DATA, config.train.batch_size, "train.batch_size")
  if workdir is not None:
    prepare_workdir(config, workdir)
  model = create_model(config, task)

  tx = create_optimizer(config, total)  # one object: the abstract and the real state match

  def init():  # the keys too: eager key ops would each compile a program of their own
    data_key, init_key, dropout_key, eval_key = jax.random.split(jax.random.key(config.seed), 4)
    return (init_state(config, task, model, data_key, init_key, total, tx),
            (data_key, dropout_key, eval_key))

  state, keys = jax.eval_shape(init)
  state_sharding, repl = sharding.state_shardings(mesh, state), sharding.replicated(mesh)
  placed = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
  state = jax.tree.map(placed, state, state_sharding)
  keys = [placed(k, repl) for k in keys]
  return Run(task, model, mesh, total, state, state_sharding, *keys,
             jax.jit(init, out_shardings=(state_sharding, repl)))


def initialize(run: Run) -> Run:
  """`run` with its state and keys computed (compiles and runs the init program)."""
  state, keys = run.init()
  return dataclasses.replace(run, state=state, data_key=keys[0], dropout_key=keys[1],
                             eval_key=keys[2])


def setup(config: ml_collections.ConfigDict, workdir: str | None = None) -> Run:
  """`plan` then `initialize`: the run with its fresh, sharded state."""
  return initialize(plan(config, workdir))


def jit_train_step(run: Run):
  """`step(state, data_key, dropout_key) -> (state, metrics)`, jitted on the run's mesh.

  The state is donated (updated in place); metrics come back replicated.
  """
  repl = sharding.replicated(run.mesh)
  return jax.jit(make_train_step(run.model, run.task, run.mesh),
                 in_shardings=(run.state_sharding, repl, repl),
                 out_shardings=(run.state_sharding, repl), donate_argnums=0)


def jit_train_loop(run: Run):
  """`make_train_loop` jitted on the run's mesh; the state is donated."""
  repl = sharding.replicated(run.mesh)
  return jax.jit(make_train_loop(run.model, run.task, run.mesh),
                 in_shardings=(run.state_sharding, repl, repl, repl),
                 out_shardings=(run.state_sharding, repl), donate_argnums=0)


def compile_ahead(jitted, *args):
  """`jitted` lowered and compiled for the shapes and shardings of `args`.

  `args` may be arrays or `jax.ShapeDtypeStruct`s (only their types are
  read), so it may run in another thread before or while the caller computes
  them; call the result with arguments of exactly those types (it does not
  retrace).
  """
  return jitted.lower(*args).compile()


def next_stop(step: int, train_config: ml_collections.ConfigDict, total: int) -> int:
  """The first step after `step` that logs, checkpoints, evaluates or ends the run."""
  stops = [total]
  for every in (train_config.log_every, train_config.checkpoint_every, train_config.eval_every):
    if every > 0:
      stops.append((step // every + 1) * every)
  return min(stops)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates on held-out data, writes everything to `workdir`.

  Rerunning with the same workdir resumes from the latest readable checkpoint.
  Returns the final held-out metrics (also in `workdir/results.json`).

  Raises:
    validate.ConfigError: a bad config value or workdir, before compiling.
    FloatingPointError: the loss or gradients became NaN/Inf (names the step).
    Preempted: SIGTERM; a checkpoint of the current step was saved first.
  """
  t_start = time.perf_counter()
  run = plan(config, workdir)
  # matplotlib takes ~0.4 s to import; it does so now, while XLA compiles (without the GIL),
  # once the config is known good. Not a daemon: an exit waits for it rather than cut it.
  threading.Thread(target=_plots, name="import-plots").start()
  task, model, mesh, total = run.task, run.model, run.mesh, run.total
  repl = sharding.replicated(mesh)
  # XLA compiles the train loop (for the abstract state) in a worker thread while this
  # one compiles and runs the init, restores, builds the held-out set and compiles its
  # evaluation: on two cores the smaller programs then cost no extra wall time.
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile") as pool:
    train_loop = pool.submit(compile_ahead, jit_train_loop(run), run.state, run.data_key,
                             run.dropout_key, np.int32(1))
    run = initialize(run)
    data_key, dropout_key, eval_key = run.data_key, run.dropout_key, run.eval_key
    state = run.state
    n_params = sum(p.size for p in jax.tree.leaves(state.params))
    writers.console(f"task {task.name}: {n_params} parameters, {total} steps, "
                    f"workdir {workdir}, mesh {dict(mesh.shape)}")
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    state = ckpt.restore_latest(state)
    first_step = int(state.step)
    if first_step:
      writers.console(f"resumed from the checkpoint at step {first_step}")
    eval_set = jax.jit(
        lambda dk, ek: task.eval_batch(dk, jax.random.fold_in(ek, base.EVAL_SALT)),
        out_shardings=repl)(data_key, eval_key)
    evaluate = compile_ahead(jax.jit(make_evaluate(model, task, config.train.eval_batch_size,
                                                   mesh), out_shardings=repl),
                             state.params, eval_set)
    train_loop = train_loop.result()
  writer = writers.MetricWriter(workdir, enabled=sharding.is_writer())
  progress = writers.Progress(first_step, total)

  def run_eval(step):
    preds, metrics = evaluate(state.params, eval_set)
    metrics = {k: float(v) for k, v in metrics.items()}
    writer.write(step, "eval", metrics)
    writers.console(f"held-out at step {step}: "
                    + " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
    return preds, metrics

  t = config.train
  step, chunk, compile_s = first_step, 1, None
  window, window_steps = None, 0  # metric sums since the last log
  try:
    with _SigtermFlag() as sigterm:
      while step < total:
        # Steps per call: 1 at first (its end is the first step, `compile_s`), then
        # about CALL_SECONDS of work, so SIGTERM and progress wait no longer than that.
        n = min(next_stop(step, t, total) - step, chunk)
        t_call = time.perf_counter()
        state, totals = train_loop(state, data_key, dropout_key, np.int32(n))
        totals = jax.device_get(totals)
        elapsed = time.perf_counter() - t_call
        ran = int(totals["steps"])
        step += ran
        if compile_s is None:
          compile_s = time.perf_counter() - t_start
          progress.start(step)
        else:
          chunk = max(1, int(CALL_SECONDS * ran / max(elapsed, 1e-6)))
          if jax.process_count() > 1:  # every process must run the same number of steps
            chunk = int(multihost_utils.broadcast_one_to_all(np.int32(chunk)))
        if not totals["finite"]:
          raise FloatingPointError(
              f"loss or gradients became NaN/Inf at step {step} (steps before it were finite; "
              f"last checkpoint: step {ckpt.latest_step() or 'none'}); "
              "lower train.learning_rate or set train.grad_clip")
        window = totals["sums"] if window is None else jax.tree.map(np.add, window,
                                                                    totals["sums"])
        window_steps += ran
        stop = sigterm.requested  # read once: a signal between two reads would skip the save
        save = itstime(step, t.checkpoint_every, total) or stop
        if itstime(step, t.log_every, total):
          scalars = {k: float(v) / window_steps for k, v in window.items()}
          window, window_steps = None, 0
          writer.write(step, "train", scalars)
          progress.report(step, scalars)
        if save:
          ckpt.save(step, state)
        if stop:
          ckpt.wait()
          raise Preempted(f"stopped by SIGTERM at step {step}; checkpoint saved; rerun the "
                          "same command to resume")
        if itstime(step, t.eval_every, total) and step != total:
          run_eval(step)
      preds, held_out = run_eval(total)
  finally:
    ckpt.close()
    writer.close()

  # results.json holds only what the run computed (bit-identical across reruns); times apart.
  results = {"task": task.name, "metric": task.metric, "held_out": held_out, "steps": total,
             "parameters": n_params, "precision": config.model.precision}
  if task.rollout_set is not None:
    results["rollout"] = evaluate_rollout(model, state.params, task, eval_key, workdir, repl)
  timing = {"compile_s": compile_s, "wall_s": time.perf_counter() - t_start,
            "platform": jax.default_backend(), "devices": mesh.size,
            "mesh": dict(mesh.shape), "processes": jax.process_count()}
  if sharding.is_writer():
    for name, content in (("results.json", results), ("timing.json", timing)):
      files.write_json(os.path.join(workdir, name), content)
    _plot(workdir, task, eval_set, np.asarray(preds), writers.read_metrics(workdir))
  writers.console("results: " + json.dumps(results))
  writers.console(f"time: {timing['wall_s']:.1f} s (first step, compile included: "
                  f"{compile_s or 0:.1f} s)")
  return results


def evaluate_rollout(model, params, task: base.Task, eval_key: jax.Array, workdir: str,
                     placement=None) -> dict[str, Any]:
  """Free-running RMSE at each horizon on held-out prefixes; prints a table and plots.

  `placement`: the sharding of the held-out prefixes (replicated on the run's mesh).
  """
  prefix, truth = jax.jit(lambda k: task.rollout_set(jax.random.fold_in(k, base.ROLLOUT_SALT)),
                          out_shardings=placement)(eval_key)
  preds = rollout.rollout(model, params, prefix, truth.shape[1])
  rmse = rollout.horizon_rmse(preds, truth, task.rollout_horizons)
  writers.console(f"free-running rollout, {prefix.shape[0]} held-out sequences, "
                  f"{prefix.shape[1]}-step warm-up:")
  writers.console("| horizon | " + " | ".join(str(h) for h in task.rollout_horizons) + " |")
  writers.console("|---|" + "---|" * len(task.rollout_horizons))
  writers.console("| RMSE | " + " | ".join(f"{v:.4f}" for v in rmse.values()) + " |")
  if sharding.is_writer():
    _plots().rollout(np.asarray(prefix)[..., 0], np.asarray(truth)[..., 0],
                     np.asarray(preds)[..., 0], os.path.join(workdir, "rollout.png"))
  return {"warmup": int(prefix.shape[1]), "sequences": int(prefix.shape[0]), **rmse}


def _plots():
  """`seqjax.plots`, imported on first use (see `train_and_evaluate`)."""
  return importlib.import_module("seqjax.plots")


def _plot(workdir: str, task: base.Task, eval_set: base.Batch, preds: np.ndarray,
          records: list[dict]) -> None:
  plots = _plots()
  plots.loss_curves(records, os.path.join(workdir, "loss.png"), task.metric)
  if task.plot == "scatter":
    shift, scale = task.info["target_shift"], task.info["target_scale"]
    plots.predicted_vs_true(np.asarray(eval_set["y"])[:, 0], preds[:, 0] * scale + shift,
                            os.path.join(workdir, "predictions.png"), task.info["unit"])
  elif task.plot == "sequence":
    plots.sequences(np.asarray(eval_set["x"])[..., 0], np.asarray(eval_set["y"])[..., 0],
                    preds[..., 0], os.path.join(workdir, "teacher_forced.png"),
                    "held-out next-step prediction (teacher forced)")
