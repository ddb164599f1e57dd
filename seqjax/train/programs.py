"""The programs of training: train step, device-side train loop, held-out evaluation.

Pure functions, no I/O: `seqjax.train.trainer` runs them for one model, or
vmapped over a leading `model` axis M for a population of members
(`make_population_train_loop`, `make_population_evaluate`).
`jit_*` compile them for a run's mesh (`planning.Run`).

Keys: step `s` uses `fold_in(key, s)`, so a run resumed at step k continues
exactly as if it had never stopped.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.data import folds
from seqjax.data.tasks import base
from seqjax.model import rollout, sequence
from seqjax.runtime import sharding


class TrainState(train_state.TrainState):
  """Flax TrainState plus the LSTM carry of stateful training and a grid's divergence mark.

  carry: (h, c), each [L, B, H], for stateful tasks; None otherwise.
  diverged_at: grids only, per model: the step whose loss or gradients were
    first NaN/Inf (the model's state stays as it was before that step), or -1.
  """
  carry: Any = None
  diverged_at: Any = None


def init_state(task: base.Task, model: sequence.SequenceModel, tx: optax.GradientTransformation,
               data_key: jax.Array, init_key: jax.Array, batch_size: int) -> TrainState:
  """Fresh parameters, optimizer state and (for stateful tasks) a zero carry [L, B, H].

  `tx` is part of the state's tree structure, so programs compiled for one
  state take another only if both hold the same `tx` object.
  """
  sample = task.train_batch(data_key, jnp.zeros((), jnp.int32))
  sample = jax.tree.map(lambda a: a[:1] if a.ndim else a, sample)
  params = model.init(init_key, sample["x"], mask=sample.get("mask"))["params"]
  carry = model.zero_carry(batch_size) if task.stateful_period else None
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, carry=carry)


def apply(model: sequence.SequenceModel, params, batch: base.Batch, carry=None, *,
          train: bool = False, rng: jax.Array | None = None):
  """The model on `batch["x"]` (and its mask): (carry, predictions)."""
  return model.apply({"params": params}, batch["x"], carry, mask=batch.get("mask"),
                     train=train, rngs={"dropout": rng} if train else None)


def _forward_train(model, task, params, batch, carry, rng):
  """Training predictions: teacher forced, then `task.free_run` fed-back steps."""
  carry, preds = apply(model, params, batch, carry, train=True, rng=rng)
  if task.free_run:
    carry, generated = rollout.free_run(model, params, carry, preds[:, -1], task.free_run)
    preds = jnp.concatenate([preds, generated], axis=1)
  return carry, preds


def make_predict(model: sequence.SequenceModel, task: base.Task, mesh=None):
  """`(params, batch) -> preds`: held-out predictions of a batch (and the task's
  free-running steps after it, `task.eval_free_run`)."""
  def predict(params, batch):
    if mesh is not None:
      batch = sharding.constrain_batch(mesh, batch)
    carry, preds = apply(model, params, batch)
    if task.eval_free_run:
      _, generated = rollout.free_run(model, params, carry, preds[:, -1], task.eval_free_run)
      preds = jnp.concatenate([preds, generated], axis=1)
    return preds

  return predict


def make_train_step(model: sequence.SequenceModel, task: base.Task, mesh=None):
  """The pure step `(state, data_key, dropout_key, lr_scale, data) -> (state, metrics)`.

  The batch is generated inside it, on device, from `data_key` and the step
  (and `data`, the task's `train_data(data_key)`, built here when None);
  with a `mesh`, each device generates only its shard of the batch.
  `lr_scale` multiplies the optimizer's updates (a per-model learning rate in
  grids; 1.0 for a single run, which leaves the updates bit-identical).
  `member`: the model's index in a population, which picks the examples it trains
  on when the task's examples carry cross-validation folds (`seqjax.data.folds`).
  """
  stateful = task.stateful_period > 0

  def train_step(state: TrainState, data_key: jax.Array, dropout_key: jax.Array,
                 lr_scale: jax.Array | float = 1.0, data: Any = None,
                 member: jax.Array | int = 0):
    batch = (task.train_batch(data_key, state.step) if data is None
             else task.batch_from(data, data_key, state.step))
    batch = folds.view(batch, member, task.folds, training=True)
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


def _zero_metrics(step, state):
  return jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(step, state)[1])


def make_train_loop(model: sequence.SequenceModel, task: base.Task, mesh=None):
  """`(state, data_key, dropout_key, num_steps, sums=None) -> (state, totals)`: many
  steps, one call.

  A device-side while loop runs up to `num_steps` train steps (a traced
  count: one compiled program serves every call), builds the task's
  `train_data` once for all of them, and stops early after the first step
  whose metrics are not finite. Small steps cost less than a dispatch from
  Python, so the driver hands this ~0.5 s of steps at a time.

  `sums`: the metric sums so far (zeros when None); each step adds its metrics
  in order, so a window of steps sums the same however it is cut into calls
  (and however a resumed run restarts it).

  totals: {"sums": sums plus every step run, "steps": steps run, "finite":
  False if the last step run had a NaN/Inf metric}.

  A task whose batches come from the host (its `feed` is a `feed.Feed`) takes one
  more argument, `batches`: a chunk of K batches [K, B, ...] (`seqjax.data.feed`);
  step i of the call trains on batch i, so `num_steps` <= K.
  """
  train_step = make_train_step(model, task, mesh)

  def train_loop(state, data_key, dropout_key, num_steps, sums=None, batches=None):
    data = task.train_data(data_key) if batches is None else None
    if batches is None:
      step = lambda st, i: train_step(st, data_key, dropout_key, data=data)
    else:
      step = lambda st, i: train_step(st, data_key, dropout_key,
                                      data=jax.tree.map(lambda a: a[i], batches))
    if sums is None:
      sums = _zero_metrics(lambda st: step(st, 0), state)

    def body(carry):
      i, state, sums, _ = carry
      state, metrics = step(state, i)
      finite = jnp.all(jnp.stack([jnp.isfinite(m).all() for m in jax.tree.leaves(metrics)]))
      return i + 1, state, jax.tree.map(jnp.add, sums, metrics), finite

    n, state, sums, finite = jax.lax.while_loop(
        lambda c: (c[0] < num_steps) & c[3], body, (jnp.int32(0), state, sums, jnp.bool_(True)))
    return state, {"sums": sums, "steps": n, "finite": finite}

  return train_loop


def over_members(fn, in_axes, loop: str = "vmap"):
  """`fn` over a leading member axis of the arguments whose `in_axes` is 0 (the others
  shared): `jax.vmap` (side by side, batched along the `model` mesh axis) or, with
  `loop="map"`, `jax.lax.map` (one member after another)."""
  if loop == "vmap":
    return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=sharding.MODEL)

  def mapped(*args):
    def one(per_member):
      it = iter(per_member)
      return fn(*(a if axis is None else next(it) for a, axis in zip(args, in_axes, strict=True)))

    return jax.lax.map(one, [a for a, axis in zip(args, in_axes, strict=True) if axis is not None])

  return mapped


def member_loop(config, mesh) -> str:
  """`config.population.loop` for `mesh`: "vmap" or "map" ("auto": "map" where the
  members share CPU devices, `mesh.model` 1)."""
  loop = config.population.get("loop", "vmap")
  if loop != "auto":
    return loop
  one_cpu = mesh.shape[sharding.MODEL] == 1 and mesh.devices.flat[0].platform == "cpu"
  return "map" if one_cpu else "vmap"


def make_population_train_loop(model: sequence.SequenceModel, task: base.Task, mesh=None,
                               loop: str = "vmap"):
  """`make_train_loop` for M models at once, over a leading `model` axis (`over_members`
  with `loop`).

  `(state [M], data_keys [M], dropout_keys [M], lr_scale [M], num_steps, sums=None,
  batches=None) -> (state, totals)`; a host-fed task's chunk of `batches` [K, B, ...] is
  every member's. A model whose metrics become NaN/Inf at a step is
  masked from then on: its parameters, optimizer state and carry stay as they
  were before that step, `state.diverged_at` records the step, and the others
  go on. The loop ends early only when every model has diverged.

  totals: {"sums": {name: [M] sums so far plus each model's finite steps},
  "steps": steps run, "alive": [M] bool}.
  """
  one_step = make_train_step(model, task, mesh)
  train_step = over_members(one_step, (0,) * 5, loop)
  # A host-fed batch is every member's: the members differ in their seeds' initial
  # parameters and dropout, and read the same batches (each its own examples of them,
  # with cross-validation folds).
  shared_step = over_members(one_step, (0, 0, 0, 0, None, 0), loop)

  def train_loop(state, data_keys, dropout_keys, lr_scale, num_steps, sums=None, batches=None):
    if batches is None:
      data = jax.vmap(task.train_data)(data_keys)
      step = lambda st, i: train_step(st, data_keys, dropout_keys, lr_scale, data)
    else:
      members = jnp.arange(lr_scale.shape[0])
      step = lambda st, i: shared_step(st, data_keys, dropout_keys, lr_scale,
                                       jax.tree.map(lambda a: a[i], batches), members)
    if sums is None:
      sums = _zero_metrics(lambda st: step(st, 0), state)

    def body(carry):
      i, state, sums = carry
      new, metrics = step(state, i)
      leaves = [jnp.isfinite(m).reshape(m.shape[0], -1).all(1) for m in jax.tree.leaves(metrics)]
      alive = state.diverged_at < 0
      ok = alive & jnp.all(jnp.stack(leaves), 0)  # [M]
      keep = lambda n, o: jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o)
      state = new.replace(
          params=jax.tree.map(keep, new.params, state.params),
          opt_state=jax.tree.map(keep, new.opt_state, state.opt_state),
          carry=jax.tree.map(keep, new.carry, state.carry),
          diverged_at=jnp.where(alive & ~ok, new.step, state.diverged_at))
      sums = jax.tree.map(lambda s, m: s + jnp.where(ok, m, 0), sums, metrics)
      return i + 1, state, sums

    n, state, sums = jax.lax.while_loop(
        lambda c: (c[0] < num_steps) & jnp.any(c[1].diverged_at < 0), body,
        (jnp.int32(0), state, sums))
    return state, {"sums": sums, "steps": n, "alive": state.diverged_at < 0}

  return train_loop


def make_evaluate(model: sequence.SequenceModel, task: base.Task, batch_size: int, mesh=None):
  """`(params, eval_set) -> (preds, metrics)`: the held-out set in one call, to jit.

  The set [N, ...] is cut into batches of `batch_size` (the last one padded
  with repeats of the last example, then dropped), run under `lax.map` so that
  memory is bounded by one batch; metrics are the task's, over all N.
  """
  predict = make_predict(model, task, mesh)

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


def make_population_evaluate(model: sequence.SequenceModel, task: base.Task, batch_size: int,
                       mesh=None):
  """`make_evaluate` vmapped: `(params [M], eval_set [M, N, ...]) -> (preds [M], metrics [M])`."""
  return jax.vmap(make_evaluate(model, task, batch_size, mesh), spmd_axis_name=sharding.MODEL)


def make_eval_set(task: base.Task):
  """`(data_key, eval_key) -> eval_set`: the task's fixed held-out set [N, ...]."""
  return lambda data_key, eval_key: task.eval_batch(
      data_key, jax.random.fold_in(eval_key, base.EVAL_SALT))


# Compiled for a run's mesh. `run` is a `planning.Run`: a grid when `run.grid`.

def _split(run) -> NamedSharding:
  return NamedSharding(run.mesh, P(sharding.MODEL))


def jit_train_step(run):
  """`(state, data_key, dropout_key) -> (state, metrics)`, one model, on the run's mesh.

  The state is donated (updated in place); metrics come back replicated.
  """
  repl = sharding.replicated(run.mesh)
  return jax.jit(make_train_step(run.model, run.task, run.mesh),
                 in_shardings=(run.state_sharding, repl, repl),
                 out_shardings=(run.state_sharding, repl), donate_argnums=0)


def jit_train_loop(run, inputs: tuple = ()):
  """The run's train loop: `(state, *run.loop_args(), num_steps, sums, *inputs) -> (state,
  totals)`.

  `sums`: the metric window so far (`zero_sums(run)` to start one). `inputs`: the
  abstract inputs its feed gives each call (`feed.Feed.abstract_inputs`: a chunk of
  host batches, split along `data`; none for batches made on the devices). The state
  is donated; totals come back replicated.
  """
  repl = sharding.replicated(run.mesh)
  chunks = tuple(jax.tree.map(lambda a: a.sharding, x) for x in inputs)
  if not run.grid:
    return jax.jit(_run_train_loop(run),
                   in_shardings=(run.state_sharding, repl, repl, repl, repl, *chunks),
                   out_shardings=(run.state_sharding, repl), donate_argnums=0)
  split = _split(run)
  return jax.jit(_run_train_loop(run),
                 in_shardings=(run.state_sharding, split, split, split, repl, repl, *chunks),
                 out_shardings=(run.state_sharding, repl), donate_argnums=0)


def _run_train_loop(run):
  """The run's train loop, unjitted: one model's, or its population's with its member loop."""
  if not run.grid:
    return make_train_loop(run.model, run.task, run.mesh)
  return make_population_train_loop(run.model, run.task, run.mesh,
                                    member_loop(run.config, run.mesh))


def zero_sums(run, inputs: tuple = ()) -> dict[str, np.ndarray]:
  """Zero metric sums of the run's train loop (given `inputs`, as `jit_train_loop`), on
  the host ({name: [] or [M]})."""
  loop = _run_train_loop(run)
  shapes = jax.eval_shape(loop, run.state, *run.loop_args(), 1, None, *inputs)[1]["sums"]
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def jit_evaluate(run, batch_size: int):
  """The run's `(params, eval_set) -> (preds, metrics)`; metrics replicated."""
  repl = sharding.replicated(run.mesh)
  if not run.grid:
    return jax.jit(make_evaluate(run.model, run.task, batch_size, run.mesh), out_shardings=repl)
  return jax.jit(make_population_evaluate(run.model, run.task, batch_size, run.mesh),
                 out_shardings=(_split(run), repl))


def jit_eval_set(run):
  """`(data_key, eval_key) -> eval_set` for the run (per model in a grid)."""
  if not run.grid:
    return jax.jit(make_eval_set(run.task), out_shardings=sharding.replicated(run.mesh))
  return jax.jit(jax.vmap(make_eval_set(run.task)), out_shardings=_split(run))


def compile_ahead(jitted, *args):
  """`jitted` lowered and compiled for the shapes and shardings of `args`.

  `args` may be arrays or `jax.ShapeDtypeStruct`s (only their types are
  read), so it may run in another thread before or while the caller computes
  them; call the result with arguments of exactly those types (it does not
  retrace).
  """
  return jitted.lower(*args).compile()
