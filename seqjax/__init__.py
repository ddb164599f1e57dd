"""seqjax: sequence experiments with a hand-written JAX/Flax LSTM.

The public API, imported on first use (JAX and Flax load then):
  seqjax.LSTM, seqjax.LSTMCell   the LSTM (`seqjax.model.lstm`)
  seqjax.SequenceModel           LSTM + head (`seqjax.model.sequence`)
  seqjax.rollout                 free-running generation and streaming (`seqjax.model.rollout`)
  seqjax.nnx                     the LSTM as Flax NNX modules (`seqjax.nnx.LSTM`, `LSTMCell`)
  seqjax.load(workdir)           a trained run, to predict with (`seqjax.train.inference`)

The packages, each importing only those listed before it: `config` (configs, validation,
command lines), `runtime` (devices, files, writers), `model`, `data` (tasks, files, feed),
`train` (planning, programs, driver, checkpoints, outputs); the commands sit on top
(`python -m seqjax.main`, `sweep`, `predict`, `report`, `doctor`, `scaling`, `bench`).
"""

import importlib
import os as _os
import signal as _signal
import sys as _sys


def _stop_at_once(signum, frame):
  """A command's Ctrl-C outside its train loop: one line, exit 130, now.

  Python's own handler raises KeyboardInterrupt wherever the main thread is; raised in
  a garbage-collection callback (JAX has one) or a `__del__`, it is printed as ignored
  and the run goes on. Ending the process at once loses nothing: every file a run
  writes survives a kill at any moment. The train loop has a handler of its own
  (`driver.StopSignals`: a checkpoint of the current step first).
  """
  del signum, frame
  print("stopped: Ctrl-C", file=_sys.stderr, flush=True)
  _os._exit(130)


def _a_seqjax_command() -> bool:
  """Whether this process is `python -m seqjax.<command>` (not a program importing seqjax)."""
  argv = list(getattr(_sys, "orig_argv", []))
  return "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("seqjax.")


# A command's Ctrl-C ends it with one line, from its first import on (a program that
# imports seqjax keeps Python's KeyboardInterrupt).
if _a_seqjax_command() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
  _signal.signal(_signal.SIGINT, _stop_at_once)

from importlib import metadata as _metadata  # noqa: E402  (slow: after the handler)

_EXPORTS = {"LSTM": "seqjax.model.lstm", "LSTMCell": "seqjax.model.lstm",
            "SequenceModel": "seqjax.model.sequence", "load": "seqjax.train.inference"}
_SUBMODULES = {"rollout": "seqjax.model.rollout", "nnx": "seqjax.model.nnx"}
__all__ = [*_EXPORTS, *_SUBMODULES, "__version__"]

try:
  __version__ = _metadata.version("seqjax")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
  __version__ = "0+unknown"


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  if name in _SUBMODULES:
    return importlib.import_module(_SUBMODULES[name])
  raise AttributeError(f"module 'seqjax' has no attribute {name!r}")
