"""JAX's persistent compilation cache: a rerun loads XLA's compiled programs.

Compiling (init, train loop, evaluation) is a large part of a short run (each
run's `timing.json` says how much); a rerun of the same program (same config shapes, code,
JAX version and machine) skips it. Results do not change: the cache holds the
programs XLA would have compiled.
"""

from __future__ import annotations

import hashlib
import os
import platform

import jax
from absl import flags


def default_dir() -> str:
  """`$XDG_CACHE_HOME/seqjax/xla-<host>`: one directory per CPU kind.

  XLA compiles CPU code for the host's instruction set, so a cache shared
  between machines (a network home) keeps a directory per set of CPU flags.
  """
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  host = platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line for line in f if line.startswith("flags")), "")
    host += "-" + hashlib.sha1(flags.encode()).hexdigest()[:10]
  except OSError:
    pass
  return os.path.join(root, "seqjax", f"xla-{host}")


def enable(path: str | None) -> str | None:
  """Turns the cache on in `path` ('' or None: off); returns the directory used.

  JAX_COMPILATION_CACHE_DIR, when set, wins (JAX reads it itself). Every
  program is cached, not only those that took over a second to compile: the
  small init and evaluation programs add up to seconds too.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  if not path:
    return None
  path = os.path.expanduser(path)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def define_flag() -> flags.FlagHolder:
  """`--compilation_cache` (default `default_dir()`; empty: off), for a command's `main`."""
  return flags.DEFINE_string(
      "compilation_cache", default_dir(), "JAX's persistent compilation cache: reruns load "
      "compiled programs instead of compiling them; empty: off.")
