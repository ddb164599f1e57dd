"""The command line: a quick run, a rerun from the compile cache, the report.

Its bad configs are rows of the table in tests/test_bad_inputs.py."""

import os
import sys

import cli_process
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_main(*args, workdir, env=None):
  return cli_process.run([sys.executable, "-m", "seqjax.main", *args, f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, **(env or {})))


def test_quick_run_from_the_command_line(tmp_path):
  workdir = tmp_path / "wd"
  result = run_main("--config=configs/echo.py:quick", workdir=str(workdir))
  assert result.returncode == 0, result.stderr
  assert "steps/s" in result.stdout and "results:" in result.stdout
  assert (workdir / "results.json").exists()


@pytest.mark.slow
def test_rerun_loads_compiled_programs_from_the_cache(tmp_path):
  """The second run compiles nothing new (the cache does not grow) and computes the same."""
  cache = tmp_path / "cache"
  results = []
  for run in ("first", "second"):
    result = run_main("--config=configs/freq.py:quick", f"--compilation_cache={cache}",
                      workdir=str(tmp_path / run))
    assert result.returncode == 0, result.stderr
    results.append((tmp_path / run / "results.json").read_text())
    entries = sorted(os.listdir(cache))
    if run == "first":
      assert entries, "nothing was cached"
      cached = entries
  assert entries == cached
  assert results[0] == results[1]

  home_cache = tmp_path / "xdg"
  off = run_main("--config=configs/freq.py:quick", "--compilation_cache=",
                 workdir=str(tmp_path / "off"), env={"XDG_CACHE_HOME": str(home_cache)})
  assert off.returncode == 0, off.stderr
  assert not (home_cache / "seqjax").exists()  # (matplotlib keeps its font cache there)


def test_report_names_a_missing_folder_and_an_empty_one(tmp_path):
  """`python -m seqjax.report`: no such folder is one line, exit 2; no runs in one, exit 0."""
  missing = cli_process.run([sys.executable, "-m", "seqjax.report", "nowhere"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
  assert missing.returncode == 2 and missing.stderr.startswith("error: nowhere: no such folder")
  (tmp_path / "runs").mkdir()
  empty = cli_process.run([sys.executable, "-m", "seqjax.report"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
  assert empty.returncode == 0 and "no results.json under runs/" in empty.stdout
