"""The benchmark shapes: the four seeds' and two large ones."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
  """A stacked LSTM problem: x [batch, time, inputs] -> `layers` x LSTM(hidden) -> Dense(1)."""
  name: str
  batch: int
  time: int
  inputs: int
  hidden: int
  layers: int = 1

  def __str__(self) -> str:
    layers = f"x{self.layers}" if self.layers > 1 else ""
    return f"{self.name} B{self.batch} T{self.time} I{self.inputs} H{self.hidden}{layers}"


SEED_SHAPES = (
    Shape("echo", 5, 5, 100, 50),
    Shape("sine", 32, 50, 1, 32, 2),
    Shape("freq", 32, 100, 1, 100),
    Shape("mean", 1, 2000, 1, 10),
)
LARGE_SHAPES = (
    Shape("wide", 256, 100, 32, 256),
    Shape("batch4096", 4096, 100, 1, 100),
)
TINY_SHAPES = (Shape("tiny", 2, 3, 2, 4),)  # the CI smoke test
MEMORY_SHAPE = Shape("long", 64, 10000, 1, 256)  # a train step that needs remat on 24 GiB

SHAPES = {s.name: s for s in SEED_SHAPES + LARGE_SHAPES + TINY_SHAPES + (MEMORY_SHAPE,)}
