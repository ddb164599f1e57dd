"""Runs one experiment: `python -m seqjax.main --config=configs/freq.py [--workdir=DIR]`.

Overrides: `--config.train.steps=500`; config args: `--config=configs/freq.py:max_freq=30`.
"""

import gc
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from seqjax import compile_cache, sharding, train, validate, workdirs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory; default: a new runs/<config>/<time>/.")
compile_cache.define_flag()
flags.mark_flags_as_required(["config"])


def parse_flags(argv):
  """absl's flag parsing; a bad config file, arg or override is one line and exit 2."""
  try:
    args = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises here, not in main
    return args
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    message = str(e)
    if "ConfigError: " in message:  # raised inside get_config, wrapped with a traceback
      message = message.rsplit("ConfigError: ", 1)[1]
    elif isinstance(e, AttributeError | KeyError):  # a typo in a --config.* override
      field = re.search(r"\w+", message)
      hint = message[message.find("Did you mean"):].rstrip("'\"") if "Did you" in message else ""
      message = f"unknown config field {field.group(0) if field else message!r}. {hint}"
    elif isinstance(e, OSError):
      message = f"cannot load the config file: {message.splitlines()[-1].strip()}"
    print("error: " + " ".join(message.replace("\\n", " ").split()), file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = FLAGS.workdir or workdirs.default(config_flags.get_config_filename(FLAGS["config"]))
  # The garbage collector would walk the ~10^6 objects of the imports (JAX, Flax, optax,
  # orbax) in every full collection while tracing, and once more at exit (~0.3 s).
  gc.freeze()
  compile_cache.enable(FLAGS.compilation_cache)
  try:
    # Both before anything touches a device: multi-host jobs join, a CPU host splits its cores.
    if not sharding.initialize_distributed():
      config = FLAGS.config
      sharding.set_cpu_devices(config.mesh.cpu_devices, config.train.batch_size,
                               config.model.hidden)
    train.train_and_evaluate(FLAGS.config, workdir)
    gc.freeze()
  except validate.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except train.Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)  # our progress goes to stdout; keep library chatter out
  app.run(main, flags_parser=parse_flags)
