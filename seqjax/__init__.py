"""seqjax: sequence experiments with a hand-written JAX/Flax LSTM.

`seqjax.load(workdir)` opens a trained run to predict with (`seqjax.inference`).
"""

from importlib import metadata as _metadata


def load(workdir):
  """The trained run in `workdir`, ready to predict: see `seqjax.inference.Run`."""
  from seqjax import inference  # JAX and Flax: imported on first use
  return inference.load(workdir)


try:
  __version__ = _metadata.version("seqjax")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
  __version__ = "0+unknown"
