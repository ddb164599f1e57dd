"""Workdirs: the default run directory, and the checks before a run writes into one.

Shared by `seqjax.main` (one run) and `seqjax.sweep` (a grid per folder).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections

from seqjax.config import configlib, validate
from seqjax.runtime import files, sharding

MIN_FREE_MB = 64
# Fields a resumed run may change: where it runs (the mesh) and how its members are
# run (one after another or side by side), not what it computes.
RESUMABLE_PREFIXES = ("allow_config_change", "mesh.", "population.loop")
# Fields a config file gained after runs were written without them, and the value that
# computes what those runs computed: such a run resumes with it.
AS_BEFORE = {"task.folds": 0}


def config_name(config_file: str) -> str:
  """`configs/freq.py:seed` -> `freq`."""
  return os.path.splitext(os.path.basename(config_file.split(":")[0]))[0]


def default(config_file: str, sweep: str | None = None) -> str:
  """Where a sweep writes without --workdir: `runs/sweep/<config>-<sweep>/` (rerunning
  the same sweep resumes it). For a run, see `create_default`."""
  name = config_name(config_file)
  if sweep is not None:
    return os.path.join("runs", "sweep", f"{name}-{sweep}")
  return os.path.join("runs", name, time.strftime("%Y%m%d-%H%M%S"))


def create_default(config_file: str) -> str:
  """A new run directory of its own, `runs/<config>/<date-time.microseconds>-<pid>/`.

  Created with an exclusive mkdir, so two runs started in the same microsecond
  never share one. The processes of a multi-host job cannot agree on such a
  name: they get `default` (to the second), and should be given --workdir.
  """
  if jax.process_count() > 1:
    return default(config_file)
  parent = os.path.join("runs", config_name(config_file))
  files.path(parent).mkdir(parents=True, exist_ok=True)
  stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S-%f}-{os.getpid()}"
  for n in range(1000):
    path = os.path.join(parent, stamp if not n else f"{stamp}-{n}")
    try:
      files.path(path).mkdir(exist_ok=False)
      return path
    except FileExistsError:
      continue
  raise validate.ConfigError(f"cannot create a new run directory under {parent}")


# Workdirs this process holds, by path: {path: the lock file's descriptor}; and those
# whose lock file it created and has not claimed yet.
_HELD: dict[str, int] = {}
_CREATED: dict[str, bool] = {}


def lock(workdir: str) -> None:
  """Holds `workdir/.lock` exclusively (`fcntl.flock`) for this process.

  The OS releases it when the process ends, however it ends, so a killed run
  leaves no stale lock. Held by the writer process only (process 0 of a
  multi-host job), and only on a local file system (an object store has no
  locks). Taking a lock this process holds already is a no-op.

  Raises ConfigError, touching nothing, when another process holds it.
  """
  root = files.path(workdir)
  key = os.path.abspath(workdir) if files.is_local(root) else None
  if key is None or not sharding.is_writer() or key in _HELD:
    return
  path = os.path.join(key, ".lock")
  created = not os.path.exists(path)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:  # a read-only file system or folder
    raise validate.ConfigError(f"--workdir={workdir!r} is not writable ({e.strerror}); "
                               "copy the run to a writable place to resume it") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise validate.ConfigError(
        f"--workdir={workdir!r} is in use by another run (pid {owner}); wait for it to end, "
        "or use another --workdir") from None
  _HELD[key] = fd
  _CREATED[key] = created


def _claim(workdir: str) -> None:
  """Writes this process's pid into the lock it holds (once the workdir checks passed)."""
  fd = _HELD.get(os.path.abspath(workdir))
  if fd is not None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _CREATED.pop(os.path.abspath(workdir), None)


def release(workdir: str) -> None:
  """Lets other processes use `workdir` (see `lock`)."""
  key = os.path.abspath(workdir)
  fd = _HELD.pop(key, None)
  if fd is not None:
    if _CREATED.pop(key, False):  # refused before it was claimed: leave no trace
      os.unlink(os.path.join(key, ".lock"))
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates and checks `workdir` (local, or gs://... through epath) before anything is compiled.

  Takes the workdir's lock (`lock`; `release` when the run ends). Raises
  ConfigError if it is in use, cannot be written, has too little free space,
  holds checkpoints beside a missing or unreadable config.json, or holds
  checkpoints of a different config (unless `config.allow_config_change`).
  """
  root = files.path(workdir)
  # A name of its own: the processes of a multi-host job may share the workdir.
  probe = root / f".write_probe.{jax.process_index()}.{os.getpid()}"
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise validate.ConfigError(f"--workdir={workdir!r} is not writable: {e}") from None
  lock(workdir)
  try:
    _check(config, workdir, root, probe)
  except BaseException:
    release(workdir)
    raise
  _claim(workdir)


def _check(config, workdir, root, probe) -> None:
  try:
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
  checkpoints = root / "checkpoints"
  if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
    if not path.exists():
      raise validate.ConfigError(
          f"--workdir={workdir!r} holds checkpoints but no config.json, so what they were "
          "trained with is unknown; use a new --workdir")
    changed = config_changes(saved_config(workdir), config)
    if changed and not config.allow_config_change:
      raise validate.ConfigError(
          f"--workdir={workdir!r} holds a run with a different config ({'; '.join(changed)}); "
          "use a new --workdir, or --config.allow_config_change=True to resume anyway")


def saved_config(workdir: str) -> dict[str, Any]:
  """`workdir/config.json`, or a ConfigError when it is unreadable or holds no config."""
  try:
    saved = files.read_json(files.path(workdir) / "config.json")
  except (ValueError, OSError) as e:
    raise validate.ConfigError(
        f"--workdir={workdir!r}: its config.json is unreadable ({type(e).__name__}); restore "
        "it or use a new --workdir") from None
  if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
    raise validate.ConfigError(
        f"--workdir={workdir!r}: its config.json holds no seqjax config (a JSON object with "
        "model, task and train); restore it or use a new --workdir")
  return saved


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`workdir/config.json`, whole (writer process only); written once the run's
  checkpoint restored, so a run that fails to resume leaves the old one."""
  if sharding.is_writer():
    files.write_text(files.path(workdir) / "config.json", config.to_json_best_effort(indent=2))


def config_changes(before: dict, config: ml_collections.ConfigDict) -> list[str]:
  """`field: old -> new` for each field of `config` that differs from `before` (a config.json).

  The mesh may change. A field seqjax gained after the run was written
  (model.precision, say) is not a change when the run now has its default, or the
  value that computes what the run computed before the field existed (`AS_BEFORE`).
  """
  before = _flatten(before)
  now = _flatten(json.loads(config.to_json_best_effort()))
  defaults = _flatten(json.loads(configlib.base_config().to_json_best_effort()))
  defaults.update(AS_BEFORE)
  return [f"{k}: {before.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
          for k in sorted(set(before) | set(now))
          if not k.startswith(RESUMABLE_PREFIXES) and before.get(k) != now.get(k)
          and not (k not in before and k in defaults and now.get(k) == defaults[k])]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out
