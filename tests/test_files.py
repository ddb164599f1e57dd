"""A workdir on an object store (`--workdir=gs://bucket/run`), through etils.epath.

There is no network here: gs:// is served by fsspec's in-memory file system,
registered under the "gs" protocol that epath uses. Everything seqjax writes
itself goes there; orbax writes checkpoint arrays with tensorstore's own gcs
driver, which this fake cannot serve, so the end-to-end run keeps its
checkpoints in a local directory.
"""

import ast
import json
import os

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from seqjax import report
from seqjax.config import configlib, validate
from seqjax.runtime import files, writers
from seqjax.train import checkpoint, trainer, workdirs

ROOT = os.path.join(os.path.dirname(__file__), "..")


class _FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  store = {}  # its own, not memory://'s
  pseudo_dirs = [""]

  def __init__(self, *args, finalize_on_close=True, **kwargs):  # gcsfs' option, epath passes it
    del finalize_on_close
    super().__init__(*args, **kwargs)


@pytest.fixture
def fake_gcs(monkeypatch):
  """gs:// served from memory, emptied after each test.

  The registration stays for the rest of the process (epath caches the file
  system it gets for gs://); no test reaches a real bucket.
  """
  monkeypatch.setenv("EPATH_USE_TF", "false")  # epath would prefer tf.io.gfile where TF is
  for protocol in _FakeGCS.protocol:
    fsspec.register_implementation(protocol, _FakeGCS, clobber=True)
  yield _FakeGCS.store
  _FakeGCS.store.clear()
  _FakeGCS.pseudo_dirs[:] = [""]


def test_metrics_and_events_on_an_object_store(fake_gcs):
  writer = writers.MetricWriter("gs://bucket/run")
  writer.write(10, "train", {"loss": 0.5})
  writer.close()
  writer = writers.MetricWriter("gs://bucket/run")  # a resumed run adds to the same file
  writer.write(20, "train", {"loss": 0.25})
  writer.close()
  assert [(r["step"], r["loss"]) for r in writers.read_metrics("gs://bucket/run")] == [
      (10, 0.5), (20, 0.25)]
  events = [k for k in fake_gcs if k.startswith("gs://bucket/run/tensorboard/events.out.")]
  assert len(events) == 2 and all(len(fake_gcs[k].getvalue()) > 0 for k in events)


def test_train_and_evaluate_with_a_gs_workdir(fake_gcs, tmp_path, monkeypatch):
  local = tmp_path / "checkpoints"  # orbax's arrays need tensorstore's gcs driver (see above)
  real = checkpoint.Checkpointer
  monkeypatch.setattr(checkpoint, "Checkpointer", lambda directory, **kw: real(local, **kw))
  real_params = checkpoint.ParamsStore
  monkeypatch.setattr(checkpoint, "ParamsStore", lambda directory: real_params(
      tmp_path / "params"))
  results = trainer.train_and_evaluate(configlib.load("freq", "quick"), "gs://bucket/run")
  stored = {k.removeprefix("gs://bucket/run/") for k in fake_gcs}
  assert {"config.json", "results.json", "timing.json", "metrics.jsonl", "loss.png",
          "predictions.png"} <= stored
  assert any(k.startswith("tensorboard/events.out.") for k in stored)
  assert fake_gcs["gs://bucket/run/loss.png"].getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
  assert files.read_json("gs://bucket/run/results.json")["test"] == results["test"]
  assert json.loads(fake_gcs["gs://bucket/run/config.json"].getvalue())["task"]["name"] == "freq"
  records = writers.read_metrics("gs://bucket/run")
  assert [r["step"] for r in records if r["split"] == "validation"] == [10, 20]
  assert sorted(int(p.name) for p in local.iterdir() if p.name.isdigit()) == [10, 20]
  assert report.rows("gs://bucket")[2].startswith("| run | freq | mae ")
  assert np.isfinite(results["test"]["mae"])


def test_unwritable_object_store_workdir_is_a_config_error(fake_gcs, monkeypatch):
  def refuse(self, data):
    raise PermissionError("403 Forbidden")
  monkeypatch.setattr(type(files.path("gs://b/x")), "write_bytes", refuse)
  with pytest.raises(validate.ConfigError, match="gs://bucket/ro.*not writable.*403"):
    workdirs.prepare(configlib.load("freq", "quick"), "gs://bucket/ro")


def test_every_file_seqjax_writes_goes_through_epath():
  """No module of the package opens, lists, creates or moves files with os/shutil/open().

  (doctor checks the local compilation cache directory.)
  """
  banned = {("builtins", "open"), ("io", "open"), ("os", "makedirs"), ("os", "remove"),
            ("os", "rename"), ("os", "replace"), ("shutil", "move"), ("shutil", "rmtree"),
            ("shutil", "copy"), ("os", "listdir")}
  allowed = {"doctor.py"}
  offenders = []
  for folder, _, names in os.walk(os.path.join(ROOT, "seqjax")):
    if os.path.basename(folder) == "bench":  # benchmark outputs are a tool's local files
      continue
    for name in sorted(n for n in names if n.endswith(".py") and n not in allowed):
      with open(os.path.join(folder, name)) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
          continue
        f = node.func
        if isinstance(f, ast.Name):
          called = ("builtins", f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
          called = (f.value.id, f.attr)
        else:
          continue  # a method of an object (an epath.Path's open, ...)
        if called in banned:
          offenders.append(f"{name}:{node.lineno} {'.'.join(called)}")
  assert not offenders, offenders


def test_a_run_from_before_the_splits_had_their_names_reads_as_validation_and_test(tmp_path):
  """metrics.jsonl's "eval" lines are validation lines; results.json's "held_out" is the
  test figure the report shows."""
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 10, "split": "eval", "time": 0, "mae": 0.5}\n'
      '{"step": 10, "split": "train", "time": 0, "loss": 1.0}\n')
  assert [(r["step"], r["split"]) for r in writers.read_metrics(tmp_path)] == [
      (10, "train"), (10, "validation")]
  (tmp_path / "results.json").write_text(json.dumps(
      {"task": "freq", "metric": "mae", "held_out": {"mae": 0.25}, "steps": 20}))
  assert report.rows(str(tmp_path))[2].startswith(f"| {tmp_path.name} | freq | mae 0.25 | 20 |")

