"""The code stays in the configured style (ruff, from the test extra)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.skipif(shutil.which("ruff") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "ruff")), reason="ruff not installed")
def test_ruff_clean():
  ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
  result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout
