"""What every command line shares: flag parsing and errors as one line with an exit code.

Exit codes: 2 a bad flag, config value or workdir (one line, nothing run);
3 a NaN/Inf loss; 128 + N a stop by signal N after its checkpoint (143 SIGTERM,
130 SIGINT); 1 a config file's own error (its traceback, after a line naming it).
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import traceback

from absl import app, flags

from seqjax.config import validate


class Preempted(Exception):  # noqa: N818  (a stop, not an error)
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved before stopping.

  `signum`: the signal (a command line exits with 128 + signum).
  """

  def __init__(self, message: str, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = int(signum)


def error(message: str, code: int = 2):
  """Prints `error: <message>` on one line to stderr and exits with `code`."""
  print("error: " + " ".join(str(message).replace("\\n", " ").split()), file=sys.stderr)
  sys.exit(code)


def _config_file(argv: list[str]) -> str:
  for arg in argv:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":")[0]
  return "--config"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(..., flags_parser=parse_flags)`): a bad flag, config
  file, arg or override is one line and exit 2."""
  fl = flags.FLAGS
  try:
    args = fl(argv)
    if "config" in fl and fl["config"].value is not None:
      fl.config.keys()  # a config file that failed to load raises here, not in main
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
    error(message)
  except Exception as e:  # noqa: BLE001  (the config file's own code failed)
    print(f"error: the config file {_config_file(argv)} raised {type(e).__name__}: {e} "
          "(its traceback follows)", file=sys.stderr)
    traceback.print_exc()
    sys.exit(1)


def positive_ints(flag: str, values: list[str], example: str) -> list[int]:
  """A list flag's values as positive integers; app.UsageError (exit 2) otherwise."""
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    numbers = []
  if not numbers or min(numbers) < 1:
    raise app.UsageError(f"--{flag}={','.join(values)} must be positive integers, e.g. "
                         f"{example}")
  return numbers


@contextlib.contextmanager
def exit_codes():
  """Turns the errors a run reports into one line and its exit code (see the module doc)."""
  try:
    yield
  except (validate.ConfigError, app.UsageError) as e:
    error(e)
  except FloatingPointError as e:
    error(e, 3)
  except Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop: nothing new to save
    print("stopped: Ctrl-C", file=sys.stderr)
    sys.exit(130)
