"""Tasks by module name: `config.task.name` is a module here with `make(task_cfg, batch_size)`.

A new task is one file, `seqjax/data/tasks/<name>.py` with a `make` returning a
`base.Task`, plus a config that sets `config.task.name = "<name>"`.
"""

import importlib
import pkgutil

from seqjax.config import validate
from seqjax.data.tasks.base import Batch, Task

__all__ = ["Batch", "Task", "names", "generated", "make"]

_NOT_TASKS = ("base",)
# Tasks that read the user's files (the others generate their data).
FROM_FILES = ("data",)


def names() -> tuple[str, ...]:
  """The task modules of this package, sorted."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if m.name not in _NOT_TASKS and not m.name.startswith("_")))


def generated() -> tuple[str, ...]:
  """The tasks that generate their own data (every one but `FROM_FILES`)."""
  return tuple(n for n in names() if n not in FROM_FILES)


def make(task_cfg, batch_size: int) -> Task:
  """Builds the task named by `task_cfg.name`; ConfigError for unknown names or values."""
  validate.one_of("task.name", task_cfg.name, names())
  return importlib.import_module(f"seqjax.data.tasks.{task_cfg.name}").make(task_cfg, batch_size)
