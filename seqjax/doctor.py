"""`python -m seqjax.doctor`: is this machine ready for seqjax?

Run it on a new machine, a Colab runtime or every worker of a TPU VM. It prints
one screen: the backend and its devices, the versions of the libraries, the
matmul precision in force, the LSTM's hand-written backward pass checked
against JAX's autodiff and the step-by-step cell, on a GPU the Pallas kernels
against the XLA path, one train-loop call of each
experiment's `:quick` config, and the compilation cache. Each check is one
line; a failed check is one line starting with `FAIL` and the exit code is 1.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable

# (distribution, module to import): what seqjax needs at run time.
PACKAGES = (("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"), ("optax", "optax"),
            ("orbax-checkpoint", "orbax.checkpoint"), ("etils", "etils.epath"),
            ("ml-collections", "ml_collections"), ("absl-py", "absl"), ("numpy", "numpy"),
            ("matplotlib", "matplotlib"), ("tensorboardX", "tensorboardX"))
EXPERIMENTS = ("freq", "sine", "mean", "echo")


class CheckFailed(Exception):
  """A check's one-line verdict."""


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:297] + "..."


def check_packages() -> str:
  """Every dependency installed and importable; jax and jaxlib of matching versions."""
  versions = {}
  for dist, module in PACKAGES:
    try:
      versions[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      raise CheckFailed(f"{dist} is not installed; reinstall seqjax: "
                        "python -m pip install -e .") from None
    try:
      importlib.import_module(module)
    except Exception as e:  # noqa: BLE001  (a broken install raises anything)
      raise CheckFailed(f"{dist} {versions[dist]} does not import ({type(e).__name__}: "
                        f"{_one_line(e)})") from None
  return ", ".join(f"{d} {v}" for d, v in versions.items() if d != "numpy") + \
      f", numpy {versions['numpy']}, Python {sys.version.split()[0]}"


# What says an accelerator is meant to be used: JAX's plugins and the devices' files.
ACCELERATOR_PACKAGES = ("jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "libtpu-nightly",
                        "jax-rocm60-plugin", "jax-rocm7-plugin")
ACCELERATOR_FILES = ("/dev/nvidia0", "/dev/accel0", "/dev/kfd")


def accelerator_hints() -> list[str]:
  """Installed accelerator plugins and present accelerator device files."""
  hints = []
  for dist in ACCELERATOR_PACKAGES:
    try:
      hints.append(f"{dist} {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  return hints + [f for f in ACCELERATOR_FILES if os.path.exists(f)]


def check_devices() -> str:
  """Joins a multi-host job first (as `seqjax.main` does), then lists the devices.

  JAX falls back to the CPU with a warning when a GPU or TPU fails to start;
  where an accelerator is installed, that is a failure here (unless
  JAX_PLATFORMS=cpu asks for the CPU).
  """
  import jax

  from seqjax.runtime import sharding
  sharding.initialize_distributed()
  devices = jax.devices()
  hints = accelerator_hints()
  if jax.default_backend() == "cpu" and hints and os.environ.get("JAX_PLATFORMS") != "cpu":
    raise CheckFailed(f"JAX runs on the CPU although {', '.join(hints)} is present: the "
                      "accelerator did not start (python -c 'import jax; jax.devices()' says "
                      "why); JAX_PLATFORMS=cpu to use the CPU")
  parts = []
  for d in devices[:4]:
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    memory = (stats or {}).get("bytes_limit")
    parts.append(f"{d.device_kind}" + (f" {memory / 2**30:.1f} GiB" if memory else ""))
  if len(devices) > 4:
    parts.append(f"... ({len(devices)} in all)")
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  return (f"{jax.default_backend()}: {len(devices)} device(s) [{'; '.join(parts)}], "
          f"{jax.process_count()} process(es), host memory {host:.0f} GiB")


def check_precision() -> str:
  import jax

  from seqjax.config import configlib
  from seqjax.model import numerics
  ours = configlib.base_config().model.precision
  return (f"model.precision={ours}: {numerics.describe(ours)}; backend default: "
          f"{numerics.describe('default')}; jax_default_matmul_precision="
          f"{jax.config.jax_default_matmul_precision}")


# The recurrence checks' problem: T, B, H small enough to compile in seconds.
STEPS, BATCH, HIDDEN = 16, 3, 8


def _recurrence_problem():
  """(keys, w_h [H, 4H], gx [T, B, 4H], carry (h, c) each [B, H], mask [T, B])."""
  import jax
  keys = jax.random.split(jax.random.key(0), 5)
  w_h = 0.5 * jax.random.normal(keys[0], (HIDDEN, 4 * HIDDEN))
  gx = jax.random.normal(keys[1], (STEPS, BATCH, 4 * HIDDEN))
  carry = tuple(jax.random.normal(k, (BATCH, HIDDEN)) for k in keys[2:4])
  mask = jax.random.bernoulli(keys[4], 0.8, (STEPS, BATCH))
  return keys, w_h, gx, carry, mask


def _scan_loss(scan):
  """A scalar of everything a scan returns, `(w_h, gx, carry) -> loss`, to differentiate."""
  import jax.numpy as jnp

  def loss(w_h, gx, carry):
    (h, c), ys = scan(w_h, gx, carry)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(h * c)
  return loss


def _relative_error(got, want) -> float:
  """The largest max |got - want| / (1 + max |want|) over the leaves of two pytrees."""
  import jax
  import jax.numpy as jnp
  return max(float(jnp.max(jnp.abs(a - b)) / (1 + jnp.max(jnp.abs(b))))
             for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))


def _bound() -> float:
  # Both sides are float32 sums over STEPS steps of the same terms in another order.
  from seqjax.model import numerics
  return 64 * STEPS * numerics.unit_roundoff("highest")


def check_recurrence() -> str:
  """The fused VJP against autodiff, and the scanned layer against the step-by-step cell."""
  import jax
  import numpy as np

  from seqjax.model import lstm, recurrence
  keys, w_h, gx, carry, mask = _recurrence_problem()

  def grads(fused):
    loss = _scan_loss(lambda *a: recurrence.scan(*a, mask, precision="highest", fused=fused))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(w_h, gx, carry)

  bound = _bound()
  grad_error = _relative_error(grads(True), grads(False))
  if not grad_error <= bound:
    raise CheckFailed(f"the LSTM's hand-written gradient differs from JAX autodiff by "
                      f"{grad_error:.2e} (allowed {bound:.1e}): this JAX/XLA computes it wrongly")

  x = jax.random.normal(keys[1], (BATCH, STEPS, 2))
  layer = lstm.LSTMLayer(HIDDEN, precision="highest")
  params = layer.init(keys[0], x)
  _, ys = jax.jit(layer.apply)(params, x)
  cell = lstm.LSTMCell(HIDDEN, 2, precision="highest")
  step = jax.jit(lambda c, x_t: cell.apply({"params": params["params"]["cell"]}, c, x_t))
  c, by_step = lstm.zero_carry((BATCH,), HIDDEN), []
  for t in range(STEPS):
    c, y = step(c, x[:, t])
    by_step.append(y)
  step_error = float(np.max(np.abs(np.asarray(ys) - np.stack(by_step, 1))))
  if not step_error <= bound:
    raise CheckFailed(f"the scanned LSTM differs from the step-by-step cell by {step_error:.2e} "
                      f"(allowed {bound:.1e})")
  return (f"fused VJP = autodiff to {grad_error:.1e}, scan = step-by-step cell to "
          f"{step_error:.1e} (allowed {bound:.1e}, precision highest)")


def _fallback(caught) -> str | None:
  """seqjax's "does not compile here" warning among `caught`, as one line (JAX's own
  warnings, such as a deprecation of the Triton backend, are not a fallback)."""
  for w in caught:
    if issubclass(w.category, RuntimeWarning) and str(w.message).startswith("seqjax: the Pallas"):
      return _one_line(Exception(str(w.message)))
  return None


def check_kernels() -> str:
  """On a GPU: the Pallas kernels compile and equal the XLA path (a layer's values and
  gradients, a model's free run). A kernel that does not compile is not a failure
  (seqjax runs the XLA path instead); one that computes differently is."""
  import warnings

  import jax
  import jax.numpy as jnp
  import numpy as np

  from seqjax.model import recurrence, rollout, sequence
  from seqjax.model.kernels import pallas_lstm, selection
  if selection.interpreted():
    return (f"interpreted on {jax.default_backend()} (the tests' way to check them): "
            "model.kernel=auto runs the XLA path")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compiled = selection.compiles(STEPS, BATCH, HIDDEN, jnp.dtype(jnp.float32),
                                  jnp.dtype(jnp.float32), jax.lax.Precision.HIGHEST)
  if not compiled:
    return f"not used here: {_fallback(caught) or 'no reason given'}"
  keys, w_h, gx, carry, _ = _recurrence_problem()

  def grads(scan):
    return jax.jit(jax.value_and_grad(_scan_loss(scan), argnums=(0, 1, 2)))(w_h, gx, carry)

  bound = _bound()
  layer_error = _relative_error(
      grads(lambda *a: pallas_lstm.scan(*a, precision="highest")),
      grads(lambda *a: recurrence.scan(*a, precision="highest")))
  if not layer_error <= bound:
    raise CheckFailed(f"the Pallas layer kernel differs from the XLA scan by {layer_error:.2e} "
                      f"(allowed {bound:.1e}): run with model.kernel=xla")
  model = sequence.SequenceModel(hidden=HIDDEN, num_layers=2, head="per_step", kernel="pallas",
                               precision="highest")
  prefix = jnp.sin(jnp.arange(STEPS, dtype=jnp.float32))[None, :, None]
  params = model.init(keys[0], prefix)["params"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fused = rollout.rollout(model, params, prefix, STEPS)
  if _fallback(caught):
    return (f"layer kernel = XLA scan to {layer_error:.1e}; the free-run kernel is not used "
            f"here: {_fallback(caught)}")
  run_error = float(np.max(np.abs(np.asarray(fused) - np.asarray(
      rollout.rollout(model.clone(kernel="xla"), params, prefix, STEPS)))))
  if not run_error <= bound:
    raise CheckFailed(f"the Pallas free-run kernel differs from the XLA loop by {run_error:.2e} "
                      f"(allowed {bound:.1e}): run with model.kernel=xla")
  return (f"layer kernel = XLA scan to {layer_error:.1e}, free-run kernel = XLA loop to "
          f"{run_error:.1e} (allowed {bound:.1e}); model.kernel=auto uses them where "
          "measured faster")


def check_experiment(name: str) -> str:
  """One call of the device-side train loop of `configs/<name>.py:quick`."""
  import jax
  import numpy as np

  from seqjax.config import configlib
  from seqjax.train import planning, programs
  try:
    config = configlib.load(name, "quick")
  except FileNotFoundError as e:
    raise CheckFailed(str(e)) from None
  run = planning.setup(config)
  loop = programs.jit_train_loop(run)
  steps = config.train.log_every
  state, totals = loop(run.state, run.data_key, run.dropout_key, np.int32(steps),
                       programs.zero_sums(run))
  totals = jax.device_get(totals)
  if int(totals["steps"]) != steps or not totals["finite"]:
    raise CheckFailed(f"{name}:quick ran {int(totals['steps'])} of {steps} steps, finite="
                      f"{bool(totals['finite'])}")
  del state
  return f"{steps} steps in one call, mean loss {float(totals['sums']['loss']) / steps:.4g}"


def check_cache(path: str | None) -> str:
  if not path:
    return "off"
  if "://" in path:  # JAX reads and writes it itself (JAX_COMPILATION_CACHE_DIR=gs://...)
    return f"{path} (not checked from here)"
  os.makedirs(path, exist_ok=True)
  if not os.access(path, os.W_OK):
    raise CheckFailed(f"compilation cache {path} is not writable; set --compilation_cache=")
  files = len(os.listdir(path))
  return f"{path} ({files} entries)"


def run_checks(checks: list[tuple[str, Callable[[], str]]], out=sys.stdout) -> int:
  """Runs `checks` in order, one line each; returns the number that failed.

  After a failed `packages` check nothing else can run, so the rest are skipped.
  """
  failed = 0
  for label, check in checks:
    start = time.perf_counter()
    try:
      line = check()
    except CheckFailed as e:
      print(f"FAIL {label}: {e}", file=out, flush=True)
      failed += 1
    except Exception as e:  # noqa: BLE001  (anything a broken machine raises: one line)
      print(f"FAIL {label}: {type(e).__name__}: {_one_line(e)}", file=out, flush=True)
      failed += 1
    else:
      print(f"ok   {label}: {line} [{time.perf_counter() - start:.1f} s]", file=out, flush=True)
      continue
    if label == "packages":
      break
  return failed


def check_all(cache_dir: str | None = None) -> int:
  """Runs every check, one line each; returns how many failed.

  `cache_dir`: the compilation cache to check (None: seqjax.main's default; '': off).
  """
  def cache():
    from seqjax.config import cli
    return check_cache(cli.enable_compile_cache(
        cli.default_compile_cache_dir() if cache_dir is None else cache_dir))

  checks: list[tuple[str, Callable[[], str]]] = [
      ("packages", check_packages), ("devices", check_devices), ("compilation cache", cache),
      ("precision", check_precision), ("recurrence", check_recurrence),
      ("pallas kernels", check_kernels)]
  checks += [(f"{name}:quick train loop", lambda name=name: check_experiment(name))
             for name in EXPERIMENTS]
  print("seqjax doctor", flush=True)
  failed = run_checks(checks)
  print("all checks passed" if not failed else f"{failed} check(s) failed", flush=True)
  return failed


def main() -> None:
  from absl import flags

  from seqjax.config import cli

  flags.DEFINE_string("compilation_cache", None, "The compilation cache to check (default: "
                      "the one seqjax.main uses; empty: off).")
  cli.run(lambda argv: 1 if check_all(flags.FLAGS.compilation_cache) else 0)


if __name__ == "__main__":
  main()
