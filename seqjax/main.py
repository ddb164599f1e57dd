"""Runs one experiment: `python -m seqjax.main --config=configs/freq.py [--workdir=DIR]`.

Overrides: `--config.train.steps=500`; config args: `--config=configs/freq.py:max_freq=30`.
"""

import gc

from absl import flags
from ml_collections import config_flags

from seqjax.config import cli
from seqjax.runtime import sharding
from seqjax.train import trainer, workdirs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory; default: a new runs/<config>/<time>/.")
cli.define_compile_cache_flag()
flags.mark_flags_as_required(["config"])


def main(argv):
  # The garbage collector would walk the million objects of the imports (JAX, Flax,
  # optax, orbax) in every full collection while tracing, and once more at exit.
  gc.freeze()
  del argv  # no positional arguments (cli.run refuses them)
  cli.enable_compile_cache(FLAGS.compilation_cache)
  # Both before anything touches a device (the default workdir asks for the process
  # count): multi-host jobs join, a CPU host splits its cores.
  if not sharding.initialize_distributed():
    config = FLAGS.config
    sharding.set_cpu_devices(config.mesh.cpu_devices, config.train.batch_size,
                             config.model.hidden)
  workdir = FLAGS.workdir or workdirs.create_default(
      config_flags.get_config_filename(FLAGS["config"]))
  trainer.train_and_evaluate(FLAGS.config, workdir)
  gc.freeze()


if __name__ == "__main__":
  cli.run(main)
