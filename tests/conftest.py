"""Test-wide setup and the helpers tests share (as fixtures).

One compilation cache for the whole run, outside the user's home: subprocesses
(`python -m seqjax.main`) find it through XDG_CACHE_HOME; this process uses it
too, so the many tests that compile the same quick configs load the programs
compiled by the first. Under pytest-xdist, every worker shares the run's cache.
Session fixtures are made once per test process (each xdist worker).
"""

import atexit
import os
import shutil
import sys
import tempfile

import cli_process
import jax
import numpy as np
import pytest

from seqjax import doctor
from seqjax.config import cli

if "SEQJAX_TEST_CACHE" not in os.environ:  # pytest's first process: xdist workers inherit it
  os.environ["SEQJAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="seqjax-test-cache-")
  atexit.register(shutil.rmtree, os.environ["SEQJAX_TEST_CACHE"], ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = os.environ["SEQJAX_TEST_CACHE"]
cli.enable_compile_cache(cli.default_compile_cache_dir())


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA's backend optimisation level for the default selection: see `pytest_configure`.
FAST_SELECTION_FLAG = "--xla_backend_optimization_level=0"


def _cpu_only() -> bool:
  """Whether JAX will run on the CPU alone: JAX_PLATFORMS says so, or no accelerator's
  plugin or device file is present (checked without starting a backend)."""
  if platforms := os.environ.get("JAX_PLATFORMS", ""):
    return platforms == "cpu"
  return not doctor.accelerator_hints()


def pytest_configure(config):
  """The default selection on a CPU compiles with XLA's backend (LLVM) optimisation off.

  The default selection (`-m 'not slow'`, the README's test command) compiles
  hundreds of small programs and runs each a few times, so LLVM's optimisation
  passes are most of its time. At level 0 the code runs slower and may round
  differently in the last bits (fewer fused multiply-adds), which no test sees:
  each compares code paths compiled alike in one process, or compares within a
  tolerance derived from the dtype. A selection with the slow tests (`.ci/run`),
  and any run on an accelerator, keeps XLA's default, the level users run. Set
  before JAX starts a backend; xdist workers and subprocesses inherit it, except
  those that set their own XLA_FLAGS (slow tests that simulate devices). An
  XLA_FLAGS that sets the level wins.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if (config.getoption("markexpr") == "not slow" and _cpu_only()
      and "xla_backend_optimization_level" not in flags):
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_SELECTION_FLAG}".strip()


@pytest.fixture(scope="session")
def freq_quick(tmp_path_factory):
  """A finished `configs/freq.py:quick` run, trained once per test process:
  `(workdir, results)`. Tests read it, or copy it (`copy_run`) to change it."""
  from seqjax.config import configlib
  from seqjax.train import trainer
  workdir = tmp_path_factory.mktemp("freq_quick") / "wd"
  results = trainer.train_and_evaluate(configlib.load("freq", "quick"), str(workdir))
  return workdir, results


@pytest.fixture(scope="session")
def copy_run():
  """`copy_run(workdir, to)`: a copy of a finished run's workdir at `to` (returned)."""
  def copy_run(workdir, to):
    shutil.copytree(workdir, to)
    return to
  return copy_run


@pytest.fixture(scope="session")
def echo_command():
  """A 300-step stateful echo run that checkpoints every 10 steps, logs every 25 and
  evaluates every 100 (append `--workdir=...`): the run the kill tests interrupt."""
  return [sys.executable, "-m", "seqjax.main", "--config=configs/echo.py:quick",
          "--config.train.steps=300", "--config.train.checkpoint_every=10",
          "--config.train.log_every=25", "--config.train.eval_every=100"]


@pytest.fixture(scope="session")
def uninterrupted(echo_command, tmp_path_factory):
  """The workdir of `echo_command` run to its end without a stop (once per test process)."""
  workdir = tmp_path_factory.mktemp("uninterrupted") / "wd"
  result = cli_process.run(echo_command + [f"--workdir={workdir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return workdir


@pytest.fixture(scope="session")
def snapshot():
  """`snapshot(folder)`: {relative path: bytes} of every file under `folder`."""
  def snapshot(folder) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(root, n), folder):
            open(os.path.join(root, n), "rb").read()
            for root, _, names in os.walk(folder) for n in names}
  return snapshot


@pytest.fixture(scope="session")
def cuda_target():
  """`with cuda_target():` programs lower for an NVIDIA GPU on this CPU-only jaxlib: newer
  JAX asks which GPU (an abstract device), older JAX needs nothing."""
  def cuda_target():
    device = jax.sharding.AbstractDevice(device_kind="NVIDIA H100", num_cores=None,
                                         platform="gpu")
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh(
        (1,), ("x",), abstract_device=device))
  return cuda_target


def write_labelled_csv(path, n=300, steps=30, seed=0):
  """Univariate sequences, label 1 carries a bump: a clear signal."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = rng.normal(0, 1, (n, steps)) + y[:, None] * 1.5 * np.sin(np.linspace(0, 3, steps))
  lines = [",".join([f"t{i}" for i in range(steps)] + ["label"])]
  lines += [",".join(f"{v:.4f}" for v in xi) + f",{yi}" for xi, yi in zip(x, y, strict=True)]
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="session")
def labelled_csv():
  """`labelled_csv(path, ...)`: `write_labelled_csv`."""
  return write_labelled_csv


def write_variable_npz(path, n=400, steps=24, features=3, seed=1):
  """Multivariate sequences of 8..24 steps, NaN-padded; y = (mean of x0, max of x1)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(8, steps + 1, n)
  x = rng.normal(size=(n, steps, features)).astype(np.float32)
  valid = np.arange(steps)[None, :] < lengths[:, None]
  y = np.stack([(x[..., 0] * valid).sum(1) / lengths,
                np.where(valid, x[..., 1], -np.inf).max(1)], 1)
  x[~valid] = np.nan
  np.savez(path, x=x, y=y)
  return path


@pytest.fixture(scope="session")
def variable_npz():
  """`variable_npz(path, ...)`: `write_variable_npz`."""
  return write_variable_npz


def write_seasonal_csv(path, steps=1200, seed=1):
  """One long series with a daily (24-step) season and noise, long format, rows shuffled."""
  rng = np.random.default_rng(seed)
  t = np.arange(steps)
  s = 10 + 3 * np.sin(2 * np.pi * t / 24) + 1.5 * np.sin(2 * np.pi * t / 6 + 1)
  s = s + 0.5 * rng.normal(size=steps)
  rows = [f"{i},{s[i]:.4f}" for i in rng.permutation(steps)]
  path.write_text("hour,load\n" + "\n".join(rows) + "\n")
  return path


@pytest.fixture(scope="session")
def seasonal_csv():
  """`seasonal_csv(path, ...)`: `write_seasonal_csv`."""
  return write_seasonal_csv
