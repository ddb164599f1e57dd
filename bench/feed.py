"""Host batches from data in memory: seqjax.data.feed's numpy gather against grain's pipeline.

  pip install grain && python bench/feed.py [--examples=10000] [--batch=32] [--steps=300]

Prints microseconds a batch of [B, 100, 1] float32 for: `feed.Order` + one numpy
fancy-index (what seqjax does), grain `MapDataset.source(x).shuffle().repeat().batch()`
read by index, and the same through grain's threaded, prefetching iterator.
"""

import argparse
import time

import numpy as np

from seqjax.data import feed


def per_batch_us(fn, steps: int) -> float:
  fn(0)
  start = time.perf_counter()
  for s in range(steps):
    fn(s)
  return (time.perf_counter() - start) / steps * 1e6


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--examples", type=int, default=10000)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=300)
  args = parser.parse_args()
  x = np.random.default_rng(0).normal(size=(args.examples, 100, 1)).astype(np.float32)
  order = feed.Order(args.examples, args.batch, seed=3)
  rows = {"seqjax.data.feed (numpy gather)": per_batch_us(lambda s: x[order(s)[0]], args.steps)}
  try:
    import grain
  except ImportError:
    print("grain is not installed (pip install grain): numpy only")
  else:
    ds = grain.MapDataset.source(x).shuffle(seed=3).repeat().batch(args.batch)
    rows["grain MapDataset, by index"] = per_batch_us(lambda s: ds[s], args.steps)
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=64)))
    rows["grain iterator, 2 threads, prefetch 64"] = per_batch_us(lambda s: next(it), args.steps)
  for name, us in rows.items():
    print(f"| {name} | {us:.0f} us/batch |")


if __name__ == "__main__":
  main()
