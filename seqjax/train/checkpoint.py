"""Orbax checkpoints of the train state in `workdir/checkpoints/<step>`.

A checkpoint that cannot be restored (truncated by a kill, corrupted on disk)
is moved aside to `workdir/checkpoints_unreadable/<step>` with a warning, and
the previous one is used: nothing is deleted, and a run never crashes on it.
"""

from __future__ import annotations

import errno
import gc
import logging as pylogging
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from seqjax.config import validate
from seqjax.runtime import files, writers


class Checkpointer:
  """Saves the whole train state (params, optimizer, step, carry, a grid's divergence marks);
  restores the latest."""

  def __init__(self, directory: files.PathLike, max_to_keep: int = 3):
    """`directory`: local or on an object store (gs://...), which orbax writes itself."""
    _write_replicated_arrays_whole()
    self._dir = files.path(directory)
    if files.is_local(self._dir):
      self._dir = self._dir.absolute()
    self._max_to_keep = max_to_keep
    self._mngr = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self._dir, options=ocp.CheckpointManagerOptions(
            max_to_keep=self._max_to_keep, create=True, cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state) -> None:
    """Starts saving `state` as checkpoint `step`; raises OSError (ENOSPC) first, writing
    nothing, when the local disk lacks room for two more checkpoints of the last's size
    (a write the disk cannot hold fails in orbax's threads, each with its traceback)."""
    if files.is_local(self._dir) and jax.process_count() == 1:  # a job's processes agree
      need = 2 * self._last_size() + 16 * 2**20
      free = shutil.disk_usage(self._dir).free
      if free < need:
        raise OSError(errno.ENOSPC, f"{free / 2**20:.0f} MiB free, a checkpoint needs about "
                      f"{need / 2**20 / 2:.0f} MiB", str(self._dir))
    self._mngr.save(step, args=ocp.args.StandardSave(_saveable(state)))

  def _last_size(self) -> int:
    """Bytes of the newest finished checkpoint (0 before the first)."""
    steps = finished_steps(self._dir)
    if not steps:
      return 0
    return sum(f.stat().st_size for f in pathlib.Path(self._dir / str(steps[-1])).rglob("*")
               if f.is_file())

  def wait(self) -> None:
    """Blocks until pending (asynchronous) saves are on disk."""
    self._mngr.wait_until_finished()

  def restore_latest(self, state):
    """`state` from the newest readable checkpoint, or `state` itself if there is none."""
    with _HeldStderr() as held:
      return self._restore_latest(state, held)

  def _restore_latest(self, state, held: _HeldStderr):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saveable(state))
    restored, step = None, None
    for step in sorted(self._mngr.all_steps(), reverse=True):
      try:
        restored = self._restore(step, abstract, held)
        break
      except Exception as e:  # noqa: BLE001  (any unreadable checkpoint: fall back, never crash)
        held.failed = True
        self._reopen()  # a failed restore can leave the manager unable to read the others
        if self._readable(step):
          raise validate.ConfigError(
              f"checkpoint {step} in {self._dir} does not fit this config's model or optimizer "
              f"({type(e).__name__}); use a new --workdir") from None
        aside = self._dir.parent / "checkpoints_unreadable" / str(step)
        for n in range(1, 1000):  # one moved aside before (the same step, written again)
          if not aside.exists():
            break
          aside = aside.with_name(f"{step}.{n}")
        writers.console(f"warning: checkpoint {step} is unreadable ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); moved to {aside}, trying the previous")
        aside.parent.mkdir(parents=True, exist_ok=True)
        (self._dir / str(step)).rename(aside)
        self._reopen()  # the manager caches its step list
    if restored is None:
      return state
    logging.info("restored checkpoint %d", step)
    return state.replace(**restored)

  def _restore(self, step: int, abstract: dict, held: _HeldStderr) -> dict:
    """Checkpoint `step` as `abstract`; a grid's checkpoint written before grids saved
    `diverged_at` restores without it (every model then counts as finite)."""
    try:
      return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception:
      if "diverged_at" not in abstract:
        raise
      held.failed = True
      older = {k: v for k, v in abstract.items() if k != "diverged_at"}
      return self._mngr.restore(step, args=ocp.args.StandardRestore(older))

  def _reopen(self) -> None:
    self._mngr.close()
    self._mngr = self._manager()

  def _readable(self, step: int) -> bool:
    """Whether the checkpoint restores at all, without a target structure."""
    try:
      self._mngr.restore(step, args=ocp.args.StandardRestore())
      return True
    except Exception:  # noqa: BLE001
      return False

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def finished_steps(directory: files.PathLike) -> list[int]:
  """The steps of the finished checkpoints in `directory`, oldest first (orbax writes
  each into a tmp folder and renames it to its step once complete)."""
  root = files.path(directory)
  if not root.exists():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


# Where a run keeps the parameters it predicts with (`seqjax.load` reads them).
PARAMS_DIR = "params"


class ParamsStore:
  """The parameters a run predicts with, in `directory/<step>`: the best evaluation's
  (`train.keep_best`) or the last step's. Only the newest is kept.

  In a multi-host job orbax names its cross-process barriers by step: a
  `Checkpointer` and a store saving the same step would meet at each other's
  barriers and hang. The store's barriers have a prefix of their own, its saves
  are synchronous, and callers let the `Checkpointer` finish first (`wait`).
  """

  def __init__(self, directory: files.PathLike):
    _write_replicated_arrays_whole()
    self._dir = files.path(directory)
    if files.is_local(self._dir):
      self._dir = self._dir.absolute()
    self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=False,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix="params")))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, params) -> None:
    if self._mngr.latest_step() == step:  # saved already (a resumed run's last evaluation)
      return
    self._mngr.save(step, args=ocp.args.StandardSave(params), force=True)

  def shapes(self) -> Any:
    """The shapes of the newest parameters (a tree of tuples), read from its metadata, or
    None when there are none."""
    self._mngr.wait_until_finished()
    step = self._mngr.latest_step()
    if step is None:
      return None
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # the store keeps its metadata a folder up
    try:
      tree = ocp.StandardCheckpointer().metadata(
          self._dir / str(step) / "default").item_metadata.tree
    finally:
      logging.set_verbosity(verbosity)
    return jax.tree.map(lambda m: tuple(m.shape), tree, is_leaf=lambda m: hasattr(m, "shape"))

  def restore(self, abstract_params) -> tuple[int, dict]:
    """(step, params) of the newest, placed as `abstract_params`' shardings say."""
    self._mngr.wait_until_finished()
    step = self._mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no saved parameters in {self._dir}")
    with _HeldStderr():
      return step, self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_params))

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def restore_latest_params(directory: files.PathLike, device: jax.Device) -> tuple[int, dict]:
  """(step, params) of the newest checkpoint a `Checkpointer` wrote in `directory`, onto
  `device`, without knowing the run's optimizer (its state is read and dropped).

  Raises FileNotFoundError when there is none.
  """
  root = files.path(directory)
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {root}")
  path = (root / str(steps[-1]) / "default").absolute() if files.is_local(root) else (
      root / str(steps[-1]) / "default")
  checkpointer = ocp.StandardCheckpointer()
  place = jax.sharding.make_single_device_sharding(device)
  with _HeldStderr():
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=place),
                          checkpointer.metadata(path).item_metadata.tree)
    restored = checkpointer.restore(path, target)
  checkpointer.close()
  return steps[-1], restored["params"]


class _HeldStderr:
  """Holds what native code and Python write to stderr (fd 2) while restoring.

  When a checkpoint's arrays cannot be read (corrupted, or of another model),
  orbax abandons its event loop and tasks while tensorstore still completes the
  other reads: their callbacks, tasks and coroutines then print tracebacks and
  "Event loop is closed" errors (over a hundred lines for a small model), which
  would bury the one line seqjax prints about it. After a failed read
  (`failed`), what was held is dropped; otherwise it is passed on.
  """

  def __init__(self):
    self.failed = False

  def __enter__(self):
    sys.stderr.flush()
    self._saved = os.dup(2)
    self._held = tempfile.TemporaryFile()
    os.dup2(self._held.fileno(), 2)
    return self

  def __exit__(self, *exc):
    if self.failed:
      time.sleep(0.05)  # the last callbacks land right after the failed read returns
      gc.collect()  # abandoned tasks and coroutines report as they are collected
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._held.seek(0)
    text = self._held.read().decode(errors="replace")
    self._held.close()
    if text and not self.failed:
      sys.stderr.write(text)
      sys.stderr.flush()
    if self.failed:
      _drop_abandoned_reads()


def _from_orbax(error: BaseException | None) -> bool:
  """Whether `error` was raised in orbax's code (its traceback passes through it)."""
  tb = getattr(error, "__traceback__", None)
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def _drop_abandoned_reads() -> None:
  """Python reports the abandoned reads' coroutines and futures when it collects them,
  later (often at exit): through `sys.unraisablehook`, asyncio's logger ("... exception
  was never retrieved") or a RuntimeWarning ("... was never awaited"). Drop those
  reports of orbax's reads only."""
  previous = sys.unraisablehook
  if getattr(previous, "seqjax_drops_abandoned_reads", False):
    return

  def hook(unraisable):
    name = getattr(getattr(unraisable, "object", None), "__qualname__", "")
    if name.endswith("_read_array_index_and_device_put") or _from_orbax(unraisable.exc_value):
      return
    previous(unraisable)

  def keep(record) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not ("_read_array_index_and_device_put" in record.getMessage()
                or ("never retrieved" in record.getMessage() and _from_orbax(error)))

  hook.seqjax_drops_abandoned_reads = True
  sys.unraisablehook = hook
  pylogging.getLogger("asyncio").addFilter(keep)
  # Newer Pythons warn instead that the abandoned read was never awaited.
  warnings.filterwarnings("ignore", message=r"coroutine '.*_read_array_index_and_device_put' "
                          "was never awaited", category=RuntimeWarning)


def _write_replicated_arrays_whole() -> None:
  """In a single process, saves a replicated array from one device, whole.

  Orbax's default (replica-parallel) splits a replicated array into a slice per
  device, each written by its device, which compiles a slicing program per
  shape and device at the first save, for a parallelism that pays only when
  the replicas are on different hosts. Multi-process runs keep the default.
  """
  if jax.process_count() > 1:
    return
  default = ocp.type_handlers.get_type_handler(jax.Array)
  if not getattr(default, "_use_replica_parallel", False):
    return
  handler = ocp.type_handlers.ArrayHandler(
      use_replica_parallel=False,
      array_metadata_store=getattr(default, "_array_metadata_store", None))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns on every override
  try:
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    logging.set_verbosity(verbosity)


def _saveable(state) -> dict:
  saved = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
           "carry": state.carry}
  if getattr(state, "diverged_at", None) is not None:  # grids: which models stopped, when
    saved["diverged_at"] = state.diverged_at
  return saved
