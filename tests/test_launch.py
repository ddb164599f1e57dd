"""launch/: the Colab notebook's code cells run (installs skipped); the scripts parse."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.slow
@pytest.mark.parametrize("task,pictures", [
    ("freq", ["loss.png", "predictions.png"]), ("sine", ["loss.png", "rollout.png",
                                                        "teacher_forced.png"]),
    ("data", ["confusion.png", "loss.png"])])
def test_colab_notebook_runs_on_a_quick_config(tmp_path, monkeypatch, task, pictures,
                                              labelled_csv):
  data_file = ""
  if task == "data":
    data_file = str(labelled_csv(tmp_path / "labelled.csv", n=100))
  with open(os.path.join(ROOT, "launch", "colab.ipynb")) as f:
    notebook = json.load(f)
  shown = []
  monkeypatch.chdir(ROOT)  # the notebook finds configs/ here instead of a fresh clone
  # Colab's IPython.display, which CI does not install.
  namespace = {"Image": lambda filename: filename, "display": shown.append}
  for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
      continue
    lines = [line for line in "".join(cell["source"]).splitlines()
             if not line.lstrip().startswith(("!", "%", "from IPython"))]  # install, IPython
    code = "\n".join(lines).replace("/tmp/seqjax_colab", str(tmp_path))
    code = code.replace("TASK, ARG = 'freq', 'quick'", f"TASK, ARG = {task!r}, 'quick'")
    code = code.replace("DATA_FILE, KIND = ''", f"DATA_FILE, KIND = {data_file!r}")
    exec(compile(code, "colab.ipynb", "exec"), namespace)  # noqa: S102
  assert namespace["results"]["task"] == task
  assert [os.path.basename(p) for p in shown] == pictures
  assert all(os.path.exists(p) for p in shown)
  results = namespace["results"]
  if "members" in results:  # the data config's default: an ensemble of seeds
    assert namespace["run"].ensemble and results["population"]["select"] == "ensemble"
  else:
    assert namespace["run"].step == results["params_step"]


def test_launch_scripts_are_valid_bash():
  for name in ("local.sh", "tpu_vm.sh", "gpu_check.sh", "gpu_data_check.sh", "gpu_flax_check.sh"):
    result = subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tpu_script_rejects_unknown_commands():
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "explode"],
                          capture_output=True, text=True)
  assert result.returncode == 2 and "allowed: create, run, doctor, fetch, delete" in result.stderr


def test_tpu_script_picks_the_software_version_of_the_accelerator(tmp_path):
  """`create` with a stand-in gcloud on PATH: the --version it passes, and a rerun reuses."""
  log = tmp_path / "gcloud.log"
  gcloud = tmp_path / "gcloud"
  gcloud.write_text('#!/usr/bin/env bash\necho "$*" >> "$GCLOUD_LOG"\n'
                    '[[ "$*" == *describe* ]] && exit "${DESCRIBE_RC:-1}"\nexit 0\n')
  gcloud.chmod(0o755)
  script = os.path.join(ROOT, "launch", "tpu_vm.sh")
  expected = {"v4-8": "tpu-ubuntu2204-base", "v5litepod-8": "v2-alpha-tpuv5-lite",
              "v5p-8": "v2-alpha-tpuv5", "v6e-8": "v2-alpha-tpuv6e"}
  for accelerator, version in expected.items():
    log.write_text("")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "GCLOUD_LOG": str(log),
           "TYPE": accelerator, "REPO": "https://example.invalid/seqjax.git"}
    result = subprocess.run(["bash", script, "create"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    create = [c for c in calls if c.startswith("compute tpus tpu-vm create")]
    assert len(create) == 1 and f"--accelerator-type={accelerator}" in create[0]
    assert f"--version={version}" in create[0]
    ssh = [c for c in calls if "tpu-vm ssh" in c]
    assert "python3 -m pip install" in ssh[0] and "git clone" in ssh[0]
    assert "python3 -m seqjax.doctor" in ssh[-1] and "--worker=all" in ssh[-1]
  # a rerun finds the VM (describe succeeds) and does not create it again
  log.write_text("")
  result = subprocess.run(["bash", script, "create"], env={**env, "DESCRIBE_RC": "0"},
                          capture_output=True, text=True)
  assert result.returncode == 0 and "reusing it" in result.stdout
  assert not [c for c in log.read_text().splitlines() if "tpu-vm create" in c]
  result = subprocess.run(["bash", script, "create"], env={**env, "TYPE": "v9-8"},
                          capture_output=True, text=True)
  assert result.returncode != 0 and "TYPE=v9-8 is not a known accelerator type" in result.stderr


@pytest.mark.slow
def test_the_gpu_check_runs_commands_that_exist_with_valid_flags(tmp_path):
  """The GPU check runs where device time is scarce: every command it runs is recorded by a
  stand-in python, then each bench command line's flags are checked as the bench checks
  them, and each file named exists."""
  log = tmp_path / "python.log"
  stub = tmp_path / "python"
  stub.write_text('#!/usr/bin/env bash\nprintf "%s\\x1f" "$@" >> "$PYTHON_LOG"\n'
                  'echo >> "$PYTHON_LOG"\n')
  stub.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "PARTS"}  # all parts
  env.update(PATH=f"{tmp_path}:{os.environ['PATH']}", PYTHON_LOG=str(log))
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_check.sh"),
                           str(tmp_path / "out")], env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr  # the stand-in's steps "passed"
  assert (tmp_path / "out" / "check.log").exists() and (tmp_path / "out" / "tables.tgz").exists()
  calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
  assert [c[:2] for c in calls[1:]] == [
      ["-m", "pytest"], ["-m", "seqjax.doctor"], ["launch/mosaic_gpu_probe.py"],
      ["-m", "pytest"]] + [["-m", "seqjax.bench"]] * 5

  named = [a for c in calls for a in c if a.startswith(("tests/", "launch/"))]
  assert named and all(os.path.exists(os.path.join(ROOT, n)) for n in named)

  check = ("import sys; from absl import flags; from seqjax.bench import __main__ as bench; "
           "flags.FLAGS(['seqjax.bench', *sys.argv[1:]]); bench.check_flags(['seqjax.bench'])")
  for call in calls[-5:]:  # in a process of its own: absl's flags are global
    checked = subprocess.run([sys.executable, "-c", check, *call[2:]], cwd=ROOT,
                             capture_output=True, text=True)
    assert checked.returncode == 0, (call, checked.stderr[-2000:])


def test_the_gpu_check_counts_failed_steps_and_still_runs_the_rest(tmp_path):
  """The benches still run (their figures are worth having), but the status says so."""
  stub = tmp_path / "python"
  stub.write_text('#!/usr/bin/env bash\n[[ "$2" == pytest ]] && exit 1\nexit 0\n')
  stub.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "PARTS"}
  env.update(PATH=f"{tmp_path}:{os.environ['PATH']}")
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_check.sh"),
                           str(tmp_path / "out")], env=env, capture_output=True, text=True)
  assert result.returncode == 2  # the kernels' tests and the suite
  assert "== unroll: exit 0" in result.stdout and "2 step(s) failed" in result.stdout


def test_colab_notebook_cells_have_ids_nbformat_accepts():
  with open(os.path.join(ROOT, "launch", "colab.ipynb")) as f:
    notebook = json.load(f)
  assert (notebook["nbformat"], notebook["nbformat_minor"]) >= (4, 5)  # ids from 4.5 on
  ids = [cell.get("id") for cell in notebook["cells"]]
  assert all(ids) and len(set(ids)) == len(ids)
  assert all(len(i) <= 64 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
