"""`python -m seqjax.bench`: seqjax against Flax nn.RNN, PyTorch nn.LSTM and Keras.

  python -m seqjax.bench                          # seed and large shapes, every installed peer
  python -m seqjax.bench --shapes=seed --repeats=20
  python -m seqjax.bench --seeds                  # time to result: :seed configs vs Keras
  python -m seqjax.bench --memory                 # T=10000 B=64 H=256 train step, peak memory
  python -m seqjax.bench --unroll=1,4,8,16,32,64,128   # scan unroll against auto_unroll
  python -m seqjax.bench --precision=default,highest   # seqjax at each matmul precision
  python -m seqjax.bench --rollout                # sine's 200-step free run, B1, forward only
  python -m seqjax.bench --kernel_tuning          # the Pallas layer kernel at each tuning (GPU)

Peers come from the `bench` extra (`pip install -e ".[bench]"`); missing ones
are skipped with a note. Runs on whatever JAX's default backend is (CPU or
GPU; torch follows onto cuda). Writes bench.csv/json/md under --out.
"""

from __future__ import annotations

import json
import platform as host_platform

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["seed", "large"], "Shape groups (seed, large, tiny) or names.")
flags.DEFINE_list("peers", None, "Peers to run (default: every installed one).")
flags.DEFINE_integer("repeats", 10, "Timed rounds per measurement (the median is reported).",
                     lower_bound=1)
flags.DEFINE_string("out", None, "Output directory (default bench_results/<platform>).")
flags.DEFINE_bool("seeds", False, "Time to result of each :seed config against its Keras peer.")
flags.DEFINE_bool("memory", False, "Peak memory of the T=10000 train step, with remat.")
flags.DEFINE_list("unroll", None, "Time seqjax's train step at each lax.scan unroll (e.g. "
                  "1,4,8,16,32,64,128) beside the automatic choice, on --shapes, at the "
                  "first --precision.")
flags.DEFINE_list("precision", ["highest"], "seqjax's matmul precision (default, high, "
                  "highest); several give seqjax peers a row each.")
flags.DEFINE_bool("rollout", False, "Time sine's 200-step free-running rollout (B1, forward "
                  "only) with the XLA scan, and with the Pallas kernel on a GPU.")
flags.DEFINE_bool("kernel_tuning", False, "Time one layer's recurrence on --shapes: the XLA "
                  "scan and the Pallas kernel at each tuning (warps, W_h held or loaded), "
                  "forward and forward+backward. A GPU's figures (elsewhere the kernel is "
                  "interpreted).")


def check_flags(argv) -> None:
  """Every flag checked before anything runs: a bad one is one line and exit 2."""
  import os

  from seqjax.bench import peers, shapes
  from seqjax.config import cli
  from seqjax.model import numerics

  del argv  # no positional arguments (cli.run refuses them)
  groups = ("seed", "large", "tiny")
  if not FLAGS.shapes or any(n not in groups and n not in shapes.SHAPES for n in FLAGS.shapes):
    raise app.UsageError(f"--shapes={','.join(FLAGS.shapes)}: allowed groups {list(groups)} "
                         f"or names {list(shapes.SHAPES)}")
  bad = [p for p in FLAGS.precision if p not in numerics.PRECISIONS]
  if bad or not FLAGS.precision:
    raise app.UsageError(f"--precision: unknown {bad}; allowed: {list(numerics.PRECISIONS)}")
  unknown = [n for n in FLAGS.peers or () if n not in peers.PEERS]
  if unknown or FLAGS.peers == []:
    raise app.UsageError(f"--peers: unknown {unknown}; allowed: {list(peers.PEERS)}")
  if FLAGS.unroll is not None:
    cli.positive_ints("unroll", FLAGS.unroll, "1,8,32")
  if FLAGS.out is not None and os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
    raise app.UsageError(f"--out={FLAGS.out} is a file; give a folder for the bench results")


def main(argv):
  check_flags(argv)
  _main()


def _main():
  import jax

  from seqjax.bench import generation, kernel_tuning, memory, peers, seeds, shapes, timing, unroll
  from seqjax.runtime import sharding

  if not (FLAGS.seeds or FLAGS.memory):  # CPU cores as devices, as seqjax.main makes them
    sharding.set_cpu_devices(sharding.available_cores(), 1)

  backend = jax.default_backend()
  out = FLAGS.out or f"bench_results/{backend}"
  meta = {"backend": backend, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
          "machine": host_platform.machine(), "cpus": _cpus()}
  if FLAGS.seeds:
    seeds.main(out, meta)
    return
  if FLAGS.memory:
    memory.main(out, meta)
    return
  if FLAGS.rollout:
    kernels = ["xla"] + (["pallas"] if backend == "gpu" else [])
    rows = [generation.row(k, FLAGS.repeats, FLAGS.precision[0]) for k in kernels]
    table = generation.markdown(rows)
    print(f"\n{meta['device']} ({backend}), median of {FLAGS.repeats} rounds\n\n{table}")
    for path in timing.write(rows, out, meta, "rollout", table):
      print("wrote", path)
    return
  groups = {"seed": shapes.SEED_SHAPES, "large": shapes.LARGE_SHAPES, "tiny": shapes.TINY_SHAPES}
  chosen = [s for name in FLAGS.shapes for s in groups.get(name, (shapes.SHAPES.get(name),))]
  if FLAGS.kernel_tuning:
    rows = kernel_tuning.sweep(chosen, FLAGS.repeats, FLAGS.precision[0])
    table = kernel_tuning.markdown(rows)
    print(f"\n{meta['device']} ({backend}), median of {FLAGS.repeats} rounds\n\n{table}")
    for path in timing.write(rows, out, meta, "kernel_tuning", table):
      print("wrote", path)
    return
  if FLAGS.unroll is not None:
    unrolls = [int(u) for u in FLAGS.unroll]
    rows = unroll.sweep(chosen, unrolls, FLAGS.repeats, FLAGS.precision[0])
    table = unroll.markdown(rows)
    print(f"\n{meta['device']} ({backend}), median of {FLAGS.repeats} rounds\n\n{table}\n")
    print("\n".join(unroll.summary(rows)))
    for path in timing.write(rows, out, meta, "unroll", table):
      print("wrote", path)
    return
  names = FLAGS.peers or list(peers.PEERS)
  device = "cuda" if backend == "gpu" else "cpu"
  rows = []
  for shape in chosen:
    for name in names:
      reason = peers.skip_reason(name)
      if reason:
        print(f"skipping {name}: {reason}", flush=True)
        continue
      for precision in FLAGS.precision if name.startswith("seqjax") else [None]:
        options = {"device": device}
        label = name
        if precision is not None:
          options["precision"] = precision
          if len(FLAGS.precision) > 1:
            label = f"{name} ({precision})"
        row = timing.time_peer(label, peers.PEERS[name], shape, FLAGS.repeats, **options)
        print(json.dumps(row), flush=True)
        rows.append(row)
  timing.add_ratios(rows)
  table = timing.markdown(rows)
  print(f"\n{meta['device']} ({backend}), median of {FLAGS.repeats} rounds\n\n{table}")
  for path in timing.write(rows, out, meta):
    print("wrote", path)


def _cpus() -> int:
  import os
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
  from seqjax.config import cli
  cli.run(main, children=True)
