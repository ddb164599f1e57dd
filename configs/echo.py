"""echo: one-hot random integers in [0, 100); output the value `lag` steps back.

  python -m seqjax.main --config=configs/echo.py                  # window 5, previous value
  python -m seqjax.main --config=configs/echo.py:window=1,lag=5   # memory only in the carry
  python -m seqjax.main --config=configs/echo.py:seed             # the seed's own setup
  python -m seqjax.main --config=configs/echo.py:quick            # smoke run, seconds

Default (window 5, lag 1): fresh windows every step, LSTM(50) + softmax.
Stream mode (window=1): sequences of 100 values read one value per step, the
carry threaded across chunks of 25 steps (truncated BPTT) and reset per
sequence; the label at step t is the value at t - lag.
Metric: test accuracy (new sequences, never trained on). Measured figures and run
times: docs/results.md.
`:seed`: stateful LSTM(50) over the 20 windows of a fresh 25-value sequence in
4 batches of 5, reset per sequence, 2000 sequences (8000 steps), Adam 1e-3.
"""

from seqjax.config import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, window=5, lag=1)
  config = configlib.base_config()

  config.task.name = "echo"
  config.task.classes = 100
  config.task.window = arg.window
  config.task.lag = arg.lag
  config.task.seq_len = 25 if arg.window > 1 else 100
  config.task.chunk = 25  # stream mode: steps per train step, carry threaded between them
  config.task.stateful = False
  config.task.eval_size = 500  # test sequences (also the validation set)

  config.model.hidden = 50 if arg.window > 1 else 128

  configlib.seqjax_training(config, steps=2000, batch_size=64)

  if arg.seed:
    config.task.seq_len = 25
    config.task.stateful = True
    config.model.hidden = 50
    configlib.keras_fit(config, batch_size=5)
    config.train.steps = 2000 * 4  # 2000 sequences x 4 batches of 5 windows
  return configlib.finish(config, arg, quick=_quick)


def _quick(config):
  """`:quick` for this task: small sets, so a smoke run takes seconds."""
  config.task.eval_size = 8
