"""What every command line shares: `run(main)`, its flag parsing, one-line errors, exit codes.

Every `python -m seqjax.<command>` runs through `run`: absl flags parsed by
`parse_flags`, `--help` printing the command's doc and flags (exit 0), and the
errors a run reports turned into one line and an exit code (`EXIT_CODES`).
Commands that compile take `--compilation_cache` (`define_compile_cache_flag`):
JAX's persistent compilation cache, with which a rerun loads XLA's compiled
programs instead of compiling them again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pathlib
import platform
import re
import signal
import sys
import traceback
from collections.abc import Callable

from absl import app, flags, logging

from seqjax.config import validate

# The exit codes of every command (the README's table is this one).
EXIT_CODES = {
    0: "done",
    1: "a check of seqjax.doctor failed, a config file's own code raised (its traceback "
       "follows a line naming the file), or the disk filled up (one line naming the newest "
       "checkpoint, from which a rerun resumes)",
    2: "a bad or missing flag, config value, input file or workdir (one line; nothing run "
       "or changed)",
    3: "the loss or gradients became NaN/Inf (the step is named; checkpoints and metrics "
       "kept)",
    130: "stopped by Ctrl-C (SIGINT): in the train loop after a checkpoint of the current "
         "step, elsewhere at once",
    143: "stopped by SIGTERM (a preemption notice), after a checkpoint of the current step",
}
HELP_FLAGS = ("-help", "-h", "-?")  # and every `--help...` form


class DiskFull(Exception):  # noqa: N818  (the machine's state, not a bug)
  """The disk of a run's workdir filled up; the message names the checkpoint to resume from."""


def disk_full(error: BaseException | None) -> bool:
  """Whether `error`, or an error it was raised from or during, is a full disk: ENOSPC,
  or tensorstore's error that wraps it (orbax writes arrays through tensorstore)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


class _NoDiskFullNoise:
  """Drops library log records about a full disk (orbax logs each failed background
  write with its traceback): the run stops with one line that says so (`DiskFull`)."""

  def filter(self, record) -> bool:
    return not (record.exc_info and disk_full(record.exc_info[1]))


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


def run(main: Callable[[list[str]], int | None], *, positional: bool = False,
        children: bool = False) -> None:
  """Runs a command's `main(argv)` as every seqjax command runs.

  Flags go through `parse_flags`; library log chatter is off (progress goes to
  stdout); `main`'s errors become one line and an exit code (`exit_codes`).
  `main` gets argv (the program name, then positional arguments only when
  `positional`, else none is allowed) and may return an exit code.
  `children`: the command runs others in child processes; a Ctrl-C then raises
  Python's KeyboardInterrupt, so that `subprocess.run` stops them and temporary
  folders are removed, instead of ending the command at once.
  """
  def checked(argv: list[str]) -> int | None:
    with exit_codes():
      if not positional and len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
      return main(argv)

  logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_NoDiskFullNoise())
  if children and getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_stop_at_once":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # seqjax's own, at import
  app.run(checked, flags_parser=parse_flags)


def print_help(full: bool = False) -> None:
  """The command's doc, its own flags (`full`: every library's too) and the exit codes."""
  app.usage(shorthelp=not full, writeto_stdout=True)
  fl, main = flags.FLAGS, sys.argv[0]
  for module in fl.flags_by_module_dict():  # flags a command takes from seqjax's modules
    if not full and module != main and "seqjax" in module:
      print(fl.module_help(module))
  print("\nExit codes:")
  for code, meaning in EXIT_CODES.items():
    print(f"  {code:>3}  {meaning}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(..., flags_parser=parse_flags)`): `--help` prints the
  help and exits 0; a bad or missing flag, config file, arg or override is one line and
  exit 2."""
  fl = flags.FLAGS
  asked = [arg for arg in argv[1:] if arg in HELP_FLAGS or arg.startswith("--help")]
  if asked:
    print_help(full=any(arg.startswith("--helpfull") for arg in asked))
    sys.exit(0)
  try:
    args = fl(argv)
    if "config" in fl and fl["config"].value is not None:
      fl.config.keys()  # a config file that failed to load raises here, not in main
    return args
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    message = str(e)
    missing = re.findall(r"Flag --(\w+) must have a value other than None", message)
    if missing:
      message = (f"missing {', '.join('--' + m for m in missing)} (required; --help lists "
                 "the flags)")
    elif "ConfigError: " in message:  # raised inside get_config, wrapped with a traceback
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
  except DiskFull as e:
    error(e, 1)
  except Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop: nothing new to save
    print("stopped: Ctrl-C", file=sys.stderr)
    sys.exit(130)


def default_compile_cache_dir() -> str:
  """`$XDG_CACHE_HOME/seqjax/xla-<host>`: one directory per CPU kind.

  XLA compiles CPU code for the host's instruction set, so a cache shared
  between machines (a network home) keeps a directory per set of CPU flags.
  """
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  host = platform.machine()
  try:
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    cpu_flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    host += "-" + hashlib.sha1(cpu_flags.encode()).hexdigest()[:10]
  except OSError:
    pass
  return os.path.join(root, "seqjax", f"xla-{host}")


def enable_compile_cache(path: str | None) -> str | None:
  """Turns JAX's compilation cache on in `path` ('' or None: off); returns the directory.

  JAX_COMPILATION_CACHE_DIR, when set, wins (JAX reads it itself). Every
  program is cached, not only those that took over a second to compile: the
  small init and evaluation programs add up to seconds too. Results do not
  change: the cache holds the programs XLA would have compiled.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  if not path:
    return None
  import jax  # here: commands that never compile do not import it
  path = os.path.expanduser(path)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def define_compile_cache_flag() -> flags.FlagHolder:
  """`--compilation_cache` (default `default_compile_cache_dir()`; empty: off)."""
  return flags.DEFINE_string(
      "compilation_cache", default_compile_cache_dir(), "JAX's persistent compilation cache: "
      "reruns load compiled programs instead of compiling them; empty: off.")
