"""sine: next-step prediction on random-phase sines (teacher forced).

  python -m seqjax.main --config=configs/sine.py
  python -m seqjax.main --config=configs/sine.py:seed             # the seed's own setup
  python -m seqjax.main --config=configs/sine.py:quick            # smoke run, seconds

Default: fresh random phases every step, 2x LSTM(32) + per-step Dense (the
seed's model), a free-running loss over 50 fed-back steps after each window
(`task.free_run`), Adam with warmup + cosine decay. Metrics: test
teacher-forced next-step MSE, and the free-running RMSE after a 50-step warm-up
at horizons 10 / 50 / 100 / 200 (printed at the end of the run). Measured
figures and run times: docs/results.md.
`:seed`: 1000 fixed training sequences, teacher forcing only, 50 epochs of
batch 32, Adam 1e-3.
"""

import math

from seqjax.config import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg)
  config = configlib.base_config()

  config.task.name = "sine"
  config.task.time_steps = 50
  config.task.width = math.pi / 2
  config.task.train_size = 0  # 0: fresh phases every step
  config.task.eval_size = 1000
  config.task.free_run = 50  # fed-back steps trained after the window (0: teacher forcing only)
  config.task.rollout_warmup = 50
  config.task.rollout_horizons = (10, 50, 100, 200)
  config.task.rollout_size = 256

  config.model.hidden = 32
  config.model.num_layers = 2

  configlib.seqjax_training(config, steps=8000, batch_size=64)

  if arg.seed:
    config.task.train_size = 1000
    config.task.free_run = 0
    configlib.keras_fit(config, batch_size=32, epochs=50)
  return configlib.finish(config, arg, quick=_quick)


def _quick(config):
  """`:quick` for this task: small sets, so a smoke run takes seconds."""
  config.task.train_size = min(config.task.train_size, 64)
  config.task.eval_size = 16
  config.task.free_run = min(config.task.free_run, 5)
  config.task.rollout_size = 8
