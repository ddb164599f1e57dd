"""seqjax: sequence experiments with a hand-written JAX/Flax LSTM.

The public API, imported on first use (JAX and Flax load then):
  seqjax.LSTM, seqjax.LSTMCell   the LSTM (`seqjax.lstm`)
  seqjax.SequenceModel           LSTM + head (`seqjax.models`)
  seqjax.rollout                 free-running generation and streaming
  seqjax.nnx                     the LSTM as Flax NNX modules (`seqjax.nnx.LSTM`, `LSTMCell`)
  seqjax.load(workdir)           a trained run, to predict with (`seqjax.inference`)
"""

import importlib
from importlib import metadata as _metadata

_EXPORTS = {"LSTM": "seqjax.lstm", "LSTMCell": "seqjax.lstm", "SequenceModel": "seqjax.models",
            "load": "seqjax.inference"}
_SUBMODULES = ("rollout", "nnx")
__all__ = [*_EXPORTS, *_SUBMODULES, "__version__"]

try:
  __version__ = _metadata.version("seqjax")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
  __version__ = "0+unknown"


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"seqjax.{name}")
  raise AttributeError(f"module 'seqjax' has no attribute {name!r}")
