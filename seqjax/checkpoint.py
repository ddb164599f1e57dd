"""Orbax checkpoints of the train state in `workdir/checkpoints/<step>`."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Saves the whole train state (params, optimizer, step, carry); restores the latest."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self._mngr = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state) -> None:
    self._mngr.save(step, args=ocp.args.StandardSave(_saveable(state)))

  def restore_latest(self, state):
    """`state` restored from the newest checkpoint, or `state` itself if there is none."""
    step = self._mngr.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saveable(state))
    restored = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    logging.info("restored checkpoint %d", step)
    return state.replace(**restored)

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _saveable(state) -> dict:
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
          "carry": state.carry}
