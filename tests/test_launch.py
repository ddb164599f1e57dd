"""launch/: the Colab notebook's code cells run (installs skipped); the scripts parse."""

import json
import os
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_colab_notebook_runs_on_a_quick_config(tmp_path, monkeypatch):
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
    exec(compile(code, "colab.ipynb", "exec"), namespace)  # noqa: S102
  assert namespace["results"]["task"] == "freq"
  assert [os.path.basename(p) for p in shown] == ["loss.png", "predictions.png"]
  assert all(os.path.exists(p) for p in shown)


def test_launch_scripts_are_valid_bash():
  for name in ("local.sh", "tpu_vm.sh"):
    result = subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tpu_script_rejects_unknown_commands():
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", "tpu_vm.sh"), "explode"],
                          capture_output=True, text=True)
  assert result.returncode == 2 and "allowed: create, run, fetch, delete" in result.stderr
