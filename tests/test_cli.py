"""Every command runs the one CLI pattern: --help exits 0, a bad or missing flag is one line
with exit 2 (`seqjax.config.cli.run`)."""

import os
import subprocess
import sys

import pytest

from seqjax.config import cli

ROOT = os.path.join(os.path.dirname(__file__), "..")
# Each command, and a flag it requires (None: it requires none).
COMMANDS = {"main": "--config", "sweep": "--config", "predict": "--workdir", "report": None,
            "doctor": None, "scaling": "--config", "bench": None}


def _all(argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
  """Runs the command lines at once (each is mostly Python's and the imports' start-up)."""
  procs = [subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for argv in argvs]
  out = []
  for argv, proc in zip(argvs, procs, strict=True):
    stdout, stderr = proc.communicate(timeout=300)
    out.append(subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr))
  return out


@pytest.mark.slow
def test_help_exits_0_and_bad_flags_are_one_line_exit_2():
  names = list(COMMANDS)
  helps = _all([[f"seqjax.{n}", "--help"] for n in names])
  unknown = _all([[f"seqjax.{n}", "--no_such_flag=1"] for n in names])
  missing = _all([[f"seqjax.{n}"] for n, flag in COMMANDS.items() if flag])
  for name, result in zip(names, helps, strict=True):
    assert result.returncode == 0, (name, result.stderr)
    assert f"seqjax.{name}" in result.stdout and "Exit codes:" in result.stdout, name
    assert "Traceback" not in result.stderr, name
  for result in unknown + missing:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.args, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), (result.args, result.stderr)
  for result, flag in zip(missing, [f for f in COMMANDS.values() if f], strict=True):
    assert flag.lstrip("-") in result.stderr, (result.args, result.stderr)


def test_the_exit_codes_are_documented_once_in_the_readme():
  readme = open(os.path.join(ROOT, "README.md")).read()
  for code, meaning in cli.EXIT_CODES.items():
    assert f"| {code} | {meaning} |" in readme, code
