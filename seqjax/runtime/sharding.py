"""The device mesh of `config.mesh` and the shardings of states and batches.

Mesh axes: `data` splits the batch (axis 0 of every batch array); `model`
splits the stacked members of a population (axis 0 of its states). Single
models replicate their parameters on every device; populations shard theirs along
`model`. Batches are generated inside the jitted step and constrained to
their sharding, so each device computes only its own shard of the data (the
partitionable threefry PRNG makes the values independent of the mesh).

Multi-host (TPU pods, SLURM or MPI GPU clusters): `initialize_distributed`
joins the job before anything touches a device; every process then runs the
same program over the global mesh, generating only the shards its devices
hold, and `is_writer()` (process 0) alone writes logs, metrics and plots.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seqjax.config import validate

DATA, MODEL = "data", "model"


def initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when the environment describes a multi-process job.

  Recognised: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID`), SLURM with more than one task, Open MPI with more than
  one rank, and `SEQJAX_DISTRIBUTED=1` (the TPU pod launcher sets it; JAX
  then finds the pod from the TPU metadata). Must run before any JAX
  computation. Returns whether it initialized.
  """
  env = os.environ
  if env.get("SEQJAX_DISTRIBUTED") == "0":
    return False
  if env.get("JAX_COORDINATOR_ADDRESS"):
    count, index = env.get("JAX_NUM_PROCESSES"), env.get("JAX_PROCESS_ID")
    jax.distributed.initialize(num_processes=int(count) if count else None,
                               process_id=int(index) if index else None)
    return True
  cluster = (int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
             or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
             or env.get("SEQJAX_DISTRIBUTED") == "1")
  if cluster:
    jax.distributed.initialize()
  return cluster


def set_cpu_devices(count: int, batch_size: int, hidden: int | None = None) -> int | None:
  """Makes the CPU backend `count` XLA devices (`jax_num_cpu_devices`), before JAX starts.

  One XLA CPU device runs a scan step's small kernels one after another on one
  core; a mesh of one device per core splits the batch instead (2 cores: the
  freq train step 0.72x, `python -m seqjax.bench`). Only the CPU backend is
  affected; GPUs and TPUs are devices already.

  Args:
    count: -1 the most devices, up to the cores this process may use, that
      divide `batch_size` and leave each enough work (`auto_cpu_devices`);
      0 leave JAX's default (one); N > 0 exactly N.
    batch_size: the global train batch the `data` axis splits.
    hidden: the LSTM width, for the work per device.

  Returns:
    The device count set, or None when left alone: 0, an XLA_FLAGS or
    JAX_NUM_CPU_DEVICES setting (which win), or, for -1, JAX already started.

  Raises:
    ConfigError: `count` is not -1, 0 or positive, or N > 0 after JAX started.
  """
  if not isinstance(count, int) or isinstance(count, bool) or count < -1:
    validate.fail("mesh.cpu_devices", count, "must be -1 (one per core, dividing the batch), "
                  "0 (JAX's default) or a positive device count")
  if (count == 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
      or "JAX_NUM_CPU_DEVICES" in os.environ):
    return None
  if count > available_cores():
    validate.fail("mesh.cpu_devices", count,
                  f"must be at most the {available_cores()} cores this process may use "
                  "(-1 chooses; to simulate more devices for testing, set XLA_FLAGS="
                  "--xla_force_host_platform_device_count=N)")
  if count == -1:
    count = auto_cpu_devices(batch_size, available_cores(), hidden)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # JAX already started in this process (e.g. called from a notebook)
    if jax.config.jax_num_cpu_devices == count or count == 1:
      return None
    validate.fail("mesh.cpu_devices", count, "must be set before JAX starts: run through "
                  "`python -m seqjax.main`, or call sharding.set_cpu_devices first")
  return count


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


# Below this much work per device and step (rows of the batch x hidden units) the
# all-reduce costs more than the second core gives (`python -m seqjax.bench`:
# freq's 16 x 100 per device runs 0.7x the time of one device, sine's 16 x 32 1.4x).
MIN_SPLIT_WORK = 1024


def auto_cpu_devices(batch_size: int, cores: int, hidden: int | None = None) -> int:
  """The most devices, at most `cores`, that split `batch_size` evenly, each with at
  least `MIN_SPLIT_WORK` rows x `hidden` (when given) to do."""
  return max(d for d in range(1, max(cores, 1) + 1) if batch_size % d == 0
             and (d == 1 or hidden is None or batch_size // d * hidden >= MIN_SPLIT_WORK))


def is_writer() -> bool:
  """Whether this process writes logs, metrics, plots and result files (process 0)."""
  return jax.process_index() == 0


def mesh_shape(data: int, model: int, devices: int, processes: int = 1) -> tuple[int, int]:
  """Resolves `-1` (all remaining devices) and checks the sizes; raises ConfigError.

  Fewer devices than there are may be used on one host (e.g. `mesh.data=1`
  to compare with a single device); a multi-host job must use all of them.
  """
  for field, value in (("mesh.data", data), ("mesh.model", model)):
    if not isinstance(value, int) or isinstance(value, bool) or not (value == -1 or value >= 1):
      validate.fail(field, value, "must be -1 (all devices) or a positive device count")
  if data == -1 and model == -1:
    validate.fail("mesh.data", data, "and mesh.model cannot both be -1")
  if data == -1 or model == -1:
    fixed = model if data == -1 else data
    if devices % fixed:
      validate.fail("mesh.model" if data == -1 else "mesh.data", fixed,
                    f"must divide the {devices} devices when the other axis is -1")
    data, model = (devices // fixed, model) if data == -1 else (data, devices // fixed)
  if data * model > devices or (processes > 1 and data * model != devices):
    validate.fail("mesh", f"{data}x{model}", f"needs data*model {'=' if processes > 1 else '<='} "
                  f"the {devices} devices{' of this multi-host job' if processes > 1 else ''}")
  return data, model


def make_mesh(mesh_config) -> Mesh:
  """A `(data, model)` mesh over the first data*model devices."""
  devices = jax.devices()
  data, model = mesh_shape(mesh_config.data, mesh_config.model, len(devices), jax.process_count())
  chosen = devices[:data * model]
  try:  # topology-aware placement on TPU/GPU; a plain reshape where that does not apply
    grid = mesh_utils.create_device_mesh((data, model), chosen)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(chosen).reshape(data, model)
  return Mesh(grid, (DATA, MODEL))


def check_divides(mesh: Mesh, axis: str, size: int, field: str) -> None:
  """ConfigError unless `size` (a batch or a population) splits evenly along `axis`."""
  n = mesh.shape[axis]
  if size % n:
    validate.fail(field, size, f"must be divisible by mesh.{axis}={n} (the {n} devices it "
                  f"splits over); change {field} or set --config.mesh.{axis}")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@functools.cache
def _gather(mesh: Mesh):
  return jax.jit(lambda tree: tree, out_shardings=replicated(mesh))


def on_host(mesh: Mesh, tree):
  """A tree's arrays on the host, whole on every process (device arrays split over the
  mesh, such as a population's along its members, are gathered first); host arrays as
  they are."""
  if any(isinstance(a, jax.Array) for a in jax.tree.leaves(tree)):
    tree = _gather(mesh)(tree)
  return jax.device_get(tree)


def state_shardings(mesh: Mesh, state, population: bool = False):
  """Shardings for a (possibly abstract) train state.

  Single run: everything replicated except the carry [L, B, H], split along
  `data` by batch. Grid: every leaf split along `model` on axis 0, the carry
  [M, L, B, H] also along `data`.
  """
  lead = (MODEL,) if population else ()
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P(*lead)), state)
  if state.carry is not None:
    carry = NamedSharding(mesh, P(*lead, None, DATA))
    shardings = shardings.replace(carry=jax.tree.map(lambda _: carry, state.carry))
  return shardings


def constrain_batch(mesh: Mesh, batch):
  """Places a batch generated inside jit: split along `data` where it divides, else replicated.

  Called inside the (possibly vmapped) step; under `vmap(spmd_axis_name=MODEL)`
  JAX prepends the population's `model` axis itself.
  """
  n = mesh.shape[DATA]

  def place(a):
    spec = P(DATA) if a.ndim and a.shape[0] % n == 0 else P()
    return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec))

  return jax.tree.map(place, batch)


def batch_chunks(mesh: Mesh) -> NamedSharding:
  """Chunks of host-fed batches [K, B, ...]: split along `data` by batch (axis 1)."""
  return NamedSharding(mesh, P(None, DATA))
