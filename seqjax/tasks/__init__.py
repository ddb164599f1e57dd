"""Task registry: `config.task.name` -> module with `make(task_cfg, batch_size)`."""

from seqjax import validate
from seqjax.tasks import echo, freq, mean, sine
from seqjax.tasks.base import Batch, Task

REGISTRY = {"echo": echo.make, "freq": freq.make, "mean": mean.make, "sine": sine.make}

__all__ = ["Batch", "Task", "REGISTRY", "make"]


def make(task_cfg, batch_size: int) -> Task:
  """Builds the task named by `task_cfg.name`; ConfigError for unknown names or values."""
  validate.one_of("task.name", task_cfg.name, REGISTRY)
  return REGISTRY[task_cfg.name](task_cfg, batch_size)
