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


def _private_uses(path: str) -> list[str]:
  """`_name`s of other seqjax modules that the module at `path` imports or reads."""
  import ast
  tree = ast.parse(open(path).read())
  modules, found = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seqjax"):
      for alias in node.names:
        if alias.name.startswith("_"):
          found.append(f"from {node.module} import {alias.name}")
        else:
          modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("seqjax"):
          modules.add(alias.asname or alias.name.split(".")[0])
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      found.append(f"{node.value.id}.{node.attr}")
  return found


def test_no_module_uses_another_modules_private_names():
  uses = {}
  for folder in ("seqjax", "tests", "bench", "configs"):
    for root, _, names in os.walk(os.path.join(ROOT, folder)):
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          if found := _private_uses(path):
            uses[os.path.relpath(path, ROOT)] = found
  assert not uses
