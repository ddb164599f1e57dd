"""`python -m seqjax.bench` smoke test on a tiny shape: runs and writes its tables (no timings
are asserted)."""

import csv
import json
import os
import sys

import cli_process
import jax
import numpy as np
import pytest

from seqjax.bench import peers, seeds, shapes, timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_cli_on_a_tiny_shape(tmp_path):
  proc = cli_process.run([sys.executable, "-m", "seqjax.bench", "--shapes=tiny", "--repeats=2",
                         "--peers=seqjax,flax nn.RNN", f"--out={tmp_path}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "bench.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["peer"] for r in rows] == ["seqjax", "flax nn.RNN"]
  assert {"shape", "train_ms", "forward_ms", "train_ratio", "forward_ratio", "compile_s",
          "train_timesteps_per_s"} <= set(rows[0])
  assert min(float(r["train_ratio"]) for r in rows) == 1.0
  assert all(float(r["train_ms"]) > 0 and float(r["compile_s"]) > 0 for r in rows)
  report = json.load(open(tmp_path / "bench.json"))
  assert report["meta"]["backend"] == jax.default_backend() and len(report["rows"]) == 2
  table = (tmp_path / "bench.md").read_text().splitlines()
  assert table[0].startswith("| shape | peer | train step ms | x fastest |")
  assert table[2].startswith("| tiny B2 T3 I2 H4 | seqjax |")
  assert "| shape | peer |" in proc.stdout


def test_bench_rejects_unknown_peers_and_shapes():
  for flag in ("--peers=caffe", "--shapes=huge"):
    proc = cli_process.run([sys.executable, "-m", "seqjax.bench", flag], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "allowed" in proc.stderr


@pytest.mark.slow
def test_every_installed_peer_runs_its_steps():
  """Each installed peer builds the tiny shape and runs a train step and a forward pass
  (seqjax's Pallas peer too: interpreted off a GPU)."""
  for name, build in peers.PEERS.items():
    if peers.skip_reason(name) and not name.startswith("seqjax"):
      continue
    train_step, forward = build(shapes.SHAPES["tiny"])
    train_step()
    forward()


def test_device_loop_peer_runs_the_same_steps():
  """One call of the device-loop peer = `steps` single-step calls (same predictions after)."""
  shape = shapes.SHAPES["tiny"]
  loop_step, loop_forward = peers.seqjax_lstm(shape, steps_per_call=3)
  step, forward = peers.seqjax_lstm(shape)
  assert (loop_step.steps, step.steps) == (3, 1)
  loop_step()
  for _ in range(3):
    step()
  np.testing.assert_allclose(loop_forward(), forward(), rtol=1e-5, atol=1e-6)
  assert np.abs(forward() - peers.seqjax_lstm(shape)[1]()).max() > 1e-4  # the steps did train


def test_ratios_and_seed_table():
  rows = timing.add_ratios([{"shape": "a", "train_ms": 2.0, "forward_ms": 1.0},
                            {"shape": "a", "train_ms": 1.0, "forward_ms": 4.0}])
  assert [r["train_ratio"] for r in rows] == [2.0, 1.0]
  assert [r["forward_ratio"] for r in rows] == [1.0, 4.0]
  table = seeds.markdown([{"experiment": "freq", "metric": "mae",
                           "seqjax_cold_s": 5.0, "seqjax_cold_metric": 0.1, "keras_cold_s": 20.0,
                           "keras_cold_metric": 0.2, "cold_ratio": 0.25,
                           "seqjax_warm_s": 2.0, "seqjax_warm_metric": 0.1, "keras_warm_s": 10.0,
                           "keras_warm_metric": 0.2, "warm_ratio": 0.2}])
  assert table.splitlines()[2] == "| freq | 5.0 | 20.0 | 0.25 | 2.0 | 10.0 | 0.20 | mae 0.1 | 0.2 |"
  assert timing.time_calls(lambda: None, repeats=3, min_seconds=0.01) >= 0


@pytest.mark.slow
def test_unroll_sweep_marks_the_automatic_choice(tmp_path):
  proc = cli_process.run([sys.executable, "-m", "seqjax.bench", "--shapes=tiny", "--repeats=2",
                         "--unroll=1,2", f"--out={tmp_path}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(tmp_path / "unroll.json"))["rows"]
  auto = shapes.SHAPES["tiny"].time  # auto_unroll never exceeds T (3 here) on any platform
  assert [r["unroll"] for r in rows] == [1, 2, auto]
  assert [r["auto"] for r in rows] == [False, False, True]
  assert min(r["train_ratio"] for r in rows) == 1.0
  assert f"auto {auto} is " in proc.stdout and "(auto)**" in (tmp_path / "unroll.md").read_text()


def test_auto_unroll_follows_its_table():
  from seqjax.model import lstm
  for platform, rows in lstm.UNROLL_TABLE.items():
    assert rows[-1][0] is None  # every B*H has a row
    for limit, unroll in rows[:-1]:
      assert lstm.auto_unroll(10_000, 1, limit, platform) == unroll
  assert 8 not in [u for _, u in lstm.UNROLL_TABLE["gpu"]]  # measured pathological on a GPU
  assert lstm.auto_unroll(2000, 1, 10, "gpu") == 32 == lstm.auto_unroll(2000, 1, 10, "cuda")
  assert lstm.auto_unroll(2000, 1, 10, "tpu") == 16  # not measured: unchanged


def test_rollout_row_times_the_free_run():
  from seqjax.bench import generation
  row = generation.row("xla", repeats=1)
  assert row["rollout_ms"] > 0 and row["dims"] == "sine rollout B1 W50 N200 H32x2"
  assert "| sine rollout B1 W50 N200 H32x2 | seqjax xla |" in generation.markdown([row])


@pytest.mark.slow
def test_kernel_tuning_rows_time_the_scan_and_each_tuning():
  from seqjax.bench import kernel_tuning
  rows = kernel_tuning.sweep([shapes.SHAPES["tiny"]], repeats=1)
  assert [r["kernel"] for r in rows] == ["xla scan", "pallas, 4 warps, W_h held",
                                         "pallas, 4 warps, W_h loaded"]  # interpreted: 4 warps
  assert all(r["forward_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)
  assert rows[1]["default"] and "forward_x_scan" in rows[2]
  table = kernel_tuning.markdown(rows)
  assert "| tiny B2 T3 I2 H4 (layer 0) | **pallas, 4 warps, W_h held (default)** |" in table
  # On a GPU every warp count is compiled, and held tiles only up to Hp = 128.
  assert len(kernel_tuning.tunings(256)) == 1 + 1  # interpreted here: one warp count
