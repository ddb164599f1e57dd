"""Workdirs: the default run directory, and the checks before a run writes into one.

Shared by `seqjax.main` (one run) and `seqjax.sweep` (a grid per folder).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections

from seqjax import configlib, files, sharding, validate

MIN_FREE_MB = 64
# Fields a resumed run may change: where it runs (the mesh), not what it computes.
RESUMABLE_PREFIXES = ("allow_config_change", "mesh.")


def config_name(config_file: str) -> str:
  """`configs/freq.py:seed` -> `freq`."""
  return os.path.splitext(os.path.basename(config_file.split(":")[0]))[0]


def default(config_file: str, sweep: str | None = None) -> str:
  """Where a run writes without --workdir: `runs/<config>/<date-time>/`, or
  `runs/sweep/<config>-<sweep>/` for a sweep (rerunning it resumes)."""
  name = config_name(config_file)
  if sweep is not None:
    return os.path.join("runs", "sweep", f"{name}-{sweep}")
  return os.path.join("runs", name, time.strftime("%Y%m%d-%H%M%S"))


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
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
    changed = config_changes(files.read_json(path), config)
    if changed and not config.allow_config_change:
      raise validate.ConfigError(
          f"--workdir={workdir!r} holds a run with a different config ({'; '.join(changed)}); "
          "use a new --workdir, or --config.allow_config_change=True to resume anyway")
  if sharding.is_writer():
    files.write_text(path, config.to_json_best_effort(indent=2))


def config_changes(before: dict, config: ml_collections.ConfigDict) -> list[str]:
  """`field: old -> new` for each field of `config` that differs from `before` (a config.json).

  The mesh may change. A field seqjax gained after the run was written
  (model.precision, say) is not a change when the run now has its default.
  """
  before = _flatten(before)
  now = _flatten(json.loads(config.to_json_best_effort()))
  defaults = _flatten(json.loads(configlib.base_config().to_json_best_effort()))
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
