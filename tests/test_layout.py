"""The folders show the architecture: imports point down, few modules at the top."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "seqjax")
# Each package may import only the packages before it; the commands at the top import any.
LAYERS = ("config", "runtime", "model", "data", "train")
MAX_TOP_MODULES = 12


def _imports(path: str) -> set[str]:
  """The seqjax modules a file imports, anywhere in it (function-level imports, and
  `importlib.import_module("seqjax....")` of a literal name, too)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom):
      assert not node.level, f"{path}: a relative import"
      if (node.module or "").startswith("seqjax"):
        found.update(f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("seqjax"))
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant)
          and str(node.args[0].value).startswith("seqjax")):
      found.add(node.args[0].value)
  return found


def _layer(module: str) -> int | None:
  parts = module.split(".")
  return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_each_package_imports_only_the_packages_below_it():
  upward = []
  for layer in LAYERS:
    for root, _, names in os.walk(os.path.join(ROOT, layer)):
      for name in sorted(n for n in names if n.endswith(".py")):
        path = os.path.join(root, name)
        for module in sorted(_imports(path)):
          target = _layer(module)
          if target is None or target > LAYERS.index(layer):
            upward.append(f"{os.path.relpath(path, ROOT)} imports {module}")
  assert not upward


def test_the_top_level_holds_the_commands_and_few_modules():
  top = sorted(n for n in os.listdir(ROOT) if n.endswith(".py"))
  assert len(top) <= MAX_TOP_MODULES, top
  packages = {n for n in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, n, "__init__.py"))}
  assert set(LAYERS) <= packages


def test_the_public_api_resolves():
  import seqjax
  for name in seqjax.__all__:
    assert getattr(seqjax, name) is not None, name
  assert seqjax.nnx.LSTM and seqjax.rollout.free_run
