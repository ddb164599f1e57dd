"""Runs one experiment: `python -m seqjax.main --config=configs/freq.py [--workdir=DIR]`.

Overrides: `--config.train.steps=500`; config args: `--config=configs/freq.py:max_freq=30`.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from seqjax import train, validate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory; default: a new runs/<config>/<time>/.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = FLAGS.workdir
  if workdir is None:
    name = os.path.splitext(os.path.basename(config_flags.get_config_filename(FLAGS["config"])))[0]
    workdir = os.path.join("runs", name, time.strftime("%Y%m%d-%H%M%S"))
  try:
    train.train_and_evaluate(FLAGS.config, workdir)
  except validate.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)  # our progress goes to stdout; keep library chatter out
  app.run(main)
