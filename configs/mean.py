"""mean: output the mean of a step sequence 0..0 1..1, from very few sequences.

  python -m seqjax.main --config=configs/mean.py                  # L=200, 80 sequences
  python -m seqjax.main --config=configs/mean.py:length=2000      # L=2000, 50 sequences
  python -m seqjax.main --config=configs/mean.py:seed             # the seed's own setup
  python -m seqjax.main --config=configs/mean.py:quick            # smoke run, seconds

Default: the seed's tiny training sets (80 sequences at L=200, 50 at L=2000),
test MAE on every other sequence of the same length. Full-batch Adam with
warmup + cosine, normalised targets, forget-gate bias 1, gradient clipping.
Metric: test MAE. Measured figures and run times: docs/results.md.
`:seed`: L=2000, 45 training sequences (50 less 10% test), Keras Masking(0),
LSTM(10) with orthogonal(gain=0.01) input kernel, Dense(1, relu), batch 1,
50 epochs, Adam 1e-3 (it does not converge, as the seed says).
"""

from seqjax.config import configlib

GAINS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def get_config(arg=None):
  arg = configlib.parse_arg(arg, length=200, train_size=0)
  config = configlib.base_config()

  config.task.name = "mean"
  config.task.length = arg.length
  config.task.train_size = arg.train_size or (80 if arg.length <= 200 else 50)
  config.task.eval_size = 2000
  config.task.mask_zeros = False
  config.task.normalize_targets = True

  config.model.hidden = 16
  config.model.chrono_tmax = float(arg.length)  # memory timescales up to the sequence length
  config.model.unroll = 8

  configlib.seqjax_training(
      config, steps=1500 if arg.length <= 200 else 1000,
      batch_size=config.task.train_size,  # full batch
      learning_rate=1e-2, log_every=100, every=500)
  config.train.eval_batch_size = 512

  if arg.seed:
    config.task.length = 2000 if arg.length == 200 else arg.length
    config.task.train_size = arg.train_size or 45
    config.task.mask_zeros = True
    config.task.normalize_targets = False
    config.model.hidden = 10
    config.model.kernel_init = "orthogonal"
    config.model.kernel_gain = 0.01
    config.model.out_activation = "relu"
    config.model.chrono_tmax = 0.0
    configlib.keras_fit(config, batch_size=1, epochs=50)
  return configlib.finish(config, arg, quick=_quick)


def _quick(config):
  """`:quick` for this task: small sets, so a smoke run takes seconds."""
  config.task.length = min(config.task.length, 50)
  config.task.train_size = min(config.task.train_size, 20)
  config.task.eval_size = 16
  config.train.batch_size = min(config.train.batch_size, 20)


def sweep(add, name="gain"):
  """`python -m seqjax.sweep --config=configs/mean.py:seed --sweep=gain --converged=0.05`.

  The seed's question: which orthogonal input-kernel gain makes the seed's
  setup (batch 1, Masking, LSTM(10)) converge, how often, how fast: 6 gains x
  8 seeds at L=200 (80 training sequences) and L=2000 (45), each length one
  vmapped program of 48 models.
  """
  if name != "gain":
    raise ValueError(f"configs/mean.py: unknown sweep {name!r}; allowed: gain")
  for length, train_size, every in ((200, 80, 400), (2000, 45, 225)):
    for gain in GAINS:
      for seed in range(8):
        add(**{"task.length": length, "task.train_size": train_size, "task.eval_size": 200,
               "train.eval_every": every, "train.checkpoint_every": every,
               "model.kernel_gain": gain, "seed": seed})
