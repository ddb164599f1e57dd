"""The command line: a bad config is one clear line and exit 2, before any training."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_main(*args, workdir):
  return subprocess.run([sys.executable, "-m", "seqjax.main", *args, f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/freq.py", "--config.train.stepz=5"], "unknown config field 'stepz'"),
    (["--config=configs/freq.py", "--config.trian.steps=5"], "unknown config field 'trian'"),
    (["--config=configs/freq.py:max_freq=60"], "config.task.max_freq=60 is invalid: allowed 2..50"),
    (["--config=configs/mean.py", "--config.task.length=-3"], "config.task.length=-3 is invalid"),
    (["--config=configs/freq.py:maxfreq=3"], "config arg 'maxfreq=3' is unknown"),
    (["--config=configs/freq.py", "--config.model.recurrent_gain=0"], "model.recurrent_gain=0"),
    (["--config=configs/nope.py"], "cannot load the config file"),
])
def test_bad_config_is_one_line_exit_2(args, expected, tmp_path):
  result = run_main(*args, workdir=str(tmp_path / "wd"))
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert expected in lines[0]
  assert "Traceback" not in result.stdout + result.stderr


def test_quick_run_from_the_command_line(tmp_path):
  workdir = tmp_path / "wd"
  result = run_main("--config=configs/echo.py:quick", workdir=str(workdir))
  assert result.returncode == 0, result.stderr
  assert "steps/s" in result.stdout and "results:" in result.stdout
  assert (workdir / "results.json").exists()
