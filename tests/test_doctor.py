"""`python -m seqjax.doctor`: exit 0 on a healthy machine, one clear line on a broken one."""

import io
import os
import sys
import warnings

import cli_process
import jax
import pytest

from seqjax import doctor

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _doctor(tmp_path, *args, pythonpath=None):
  env = dict(os.environ)
  if pythonpath:
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
  return cli_process.run([sys.executable, "-m", "seqjax.doctor", *args], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_healthy_machine_passes_every_check(tmp_path):
  result = _doctor(tmp_path)  # outside the repository: configs are found beside the package
  assert result.returncode == 0, result.stdout + result.stderr
  lines = result.stdout.splitlines()
  for label in ("packages", "devices", "compilation cache", "precision", "recurrence",
                "pallas kernels", "freq:quick train loop", "sine:quick train loop",
                "mean:quick train loop", "echo:quick train loop"):
    assert any(line.startswith(f"ok   {label}:") for line in lines), (label, result.stdout)
  assert "FAIL" not in result.stdout
  assert lines[-1] == "all checks passed"


def test_jax_and_jaxlib_mismatch_is_one_line(tmp_path):
  """A jaxlib older than jax needs (here a stand-in package first on the path)."""
  fake = tmp_path / "site" / "jaxlib"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("")
  (fake / "version.py").write_text('__version__ = "0.4.1"\n__version_info__ = (0, 4, 1)\n'
                                   '_minimum_jaxlib_version = "0.4.1"\n')
  result = _doctor(tmp_path, pythonpath=tmp_path / "site")
  assert result.returncode == 1
  fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
  assert len(fails) == 1
  assert fails[0].startswith("FAIL packages: jax ") and "jaxlib is version 0.4.1" in fails[0]
  assert "Traceback" not in result.stdout + result.stderr


def test_missing_dependency_is_one_line(tmp_path):
  site = tmp_path / "site"
  site.mkdir()
  (site / "tensorboardX.py").write_text('raise ImportError("No module named tensorboardX")\n')
  result = _doctor(tmp_path, pythonpath=site)
  assert result.returncode == 1
  assert "FAIL packages: tensorboardX" in result.stdout
  assert "Traceback" not in result.stdout + result.stderr


def test_a_failing_check_is_one_line_and_counted():
  out = io.StringIO()

  def broken():
    raise RuntimeError("the device went away\nwith a second line")

  failed = doctor.run_checks([("devices", broken), ("precision", lambda: "fine")], out)
  assert failed == 1
  assert out.getvalue().splitlines()[0] == (
      "FAIL devices: RuntimeError: the device went away with a second line")
  assert out.getvalue().splitlines()[1].startswith("ok   precision: fine")


def test_an_accelerator_that_did_not_start_is_a_failure(monkeypatch):
  """JAX fell back to the CPU (a broken CUDA or libtpu) where an accelerator is installed."""
  monkeypatch.setattr(doctor, "accelerator_hints", lambda: ["libtpu 0.0.30", "/dev/accel0"])
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # on any machine the suite runs
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  with pytest.raises(doctor.CheckFailed, match="JAX runs on the CPU although libtpu 0.0.30, "
                     "/dev/accel0 is present"):
    doctor.check_devices()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # asked for: fine
  assert doctor.check_devices().startswith("cpu: ")


def test_bad_arguments_are_a_usage_error(tmp_path):
  result = _doctor(tmp_path, "--fast")
  assert result.returncode == 2 and result.stderr.startswith("error: ")
  assert "fast" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_on_a_gpu_the_pallas_kernels_are_checked_against_the_xla_path(monkeypatch):
  """Here the kernels run interpreted where Triton would compile them on a GPU."""
  from seqjax.model.kernels import pallas_free_run, pallas_lstm, selection
  assert doctor.check_kernels().startswith("interpreted on cpu")
  monkeypatch.setattr(selection, "interpreted", lambda platform=None: False)
  monkeypatch.setattr(selection, "compiles", lambda *a: True)
  monkeypatch.setattr(selection, "free_run_compiles", lambda *a: True)
  for module, name in ((pallas_lstm, "scan"), (pallas_free_run, "free_run")):
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, real=real, **k: real(*a, **{**k,
                                                                           "interpret": True}))
  line = doctor.check_kernels()
  assert line.startswith("layer kernel = XLA scan to ") and "free-run kernel = XLA loop" in line

  # JAX's own warnings (JAX 0.12 deprecates the Triton backend on every lowering) do not
  # count as the kernel falling back.
  free_run = pallas_free_run.free_run

  def deprecated(*a, **k):
    warnings.warn("The Pallas Triton backend is deprecated", DeprecationWarning, stacklevel=2)
    return free_run(*a, **k)
  monkeypatch.setattr(pallas_free_run, "free_run", deprecated)
  jax.clear_caches()  # the rollout is jitted: trace it again with the stand-in
  assert "free-run kernel = XLA loop" in doctor.check_kernels()

  monkeypatch.setattr(pallas_free_run, "free_run", lambda *a, **k: jax.tree.map(
      lambda v: v * 1.01, free_run(*a, **k)))  # a free run that computes wrongly
  jax.clear_caches()
  with pytest.raises(doctor.CheckFailed, match="differs from the XLA loop"):
    doctor.check_kernels()

  real_scan = pallas_lstm.scan
  monkeypatch.setattr(pallas_lstm, "scan", lambda *a, **k: jax.tree.map(
      lambda v: v * 1.01, real_scan(*a, **k)))  # a layer kernel that computes wrongly
  with pytest.raises(doctor.CheckFailed, match="differs from the XLA scan"):
    doctor.check_kernels()
  jax.clear_caches()  # leave no stand-in behind in a jitted program
