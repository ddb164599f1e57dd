"""freq: regress the frequency of a sine from 100 samples.

  python -m seqjax.main --config=configs/freq.py                  # max_freq=10
  python -m seqjax.main --config=configs/freq.py:max_freq=45
  python -m seqjax.main --config=configs/freq.py:seed             # the seed's own setup
  python -m seqjax.main --config=configs/freq.py:quick            # smoke run, seconds

Default: fresh sines every step (online), targets normalised to [-1, 1],
LSTM(100) -> Dense(100, relu) -> Dense(1), Adam with warmup + cosine decay.
Metric: test MAE (cycles; new sequences, never trained on). Measured figures and
run times: docs/results.md.
`:seed`: 10 sines per frequency, the seed's model with Dropout(0.1) and a relu
output, 200 epochs of batch 32, Adam 1e-3, unnormalised targets.
"""

from seqjax.config import configlib

GAINS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def get_config(arg=None):
  arg = configlib.parse_arg(arg, max_freq=10)
  config = configlib.base_config()

  config.task.name = "freq"
  config.task.max_freq = arg.max_freq
  config.task.time_steps = 100
  config.task.per_freq = 0  # 0: fresh data every step; > 0: a finite set, per frequency
  config.task.eval_per_freq = 50
  config.task.normalize_targets = True

  config.model.hidden = 100
  config.model.head_hidden = (100,)
  config.model.activation = "relu"

  configlib.seqjax_training(
      config, steps={10: 3000, 20: 4000, 30: 5000}.get(arg.max_freq, 6000), batch_size=64,
      warmup_steps=200)

  if arg.seed:
    config.task.per_freq = 10
    config.task.normalize_targets = False
    config.model.dropout = 0.1
    config.model.out_activation = "relu"
    configlib.keras_fit(config, batch_size=32, epochs=200)
    config.train.log_every = 100
  return configlib.finish(config, arg)


def sweep(add, name="gain"):
  """`python -m seqjax.sweep --config=configs/freq.py:seed --sweep=gain --converged=0.5`.

  Orthogonal input-kernel gain on the seed's freq setup (max_freq 10):
  6 gains x 4 seeds as one vmapped program.
  """
  if name != "gain":
    raise ValueError(f"configs/freq.py: unknown sweep {name!r}; allowed: gain")
  for gain in GAINS:
    for seed in range(4):
      add(**{"model.kernel_init": "orthogonal", "model.kernel_gain": gain, "seed": seed,
             "train.eval_every": 60})
