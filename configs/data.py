"""data: train on your own sequences from a .npy, .npz, .csv or UCR/UEA .ts file.

  python -m seqjax.main --config=configs/data.py --config.task.train=labelled.csv
  python -m seqjax.main --config=configs/data.py:regression --config.task.train=seqs.npz
  python -m seqjax.main --config=configs/data.py:forecast --config.task.train=series.csv \
      --config.task.time_column=date --config.task.horizon=12 --config.task.season=12

Kinds (the config arg): classification (default; one integer label a sequence),
regression (K numbers a sequence) and forecast (the next `horizon` steps of a
series from a `window` of past steps). File formats: see seqjax/data/readers.py.
The test split: `task.test` if given, else a seeded split (by time for series);
training stops early on the validation split and keeps the best parameters.
results.json reports the test metric beside the field's baselines on the same
test split (majority class, 1-NN Euclidean and DTW; training mean, ridge;
persistence, seasonal naive, drift) and a verdict: whether the model beat the
best of them (the console's last line; a warning when it did not).
Predict with the run afterwards:
  python -m seqjax.predict --workdir=RUN --input=new.csv --output=pred.csv
Metric: the test accuracy, MAE or forecast MAE beside the baselines; each
run's time is in its timing.json.
"""

from seqjax.config import configlib, validate

KINDS = ("classification", "regression", "forecast")


def get_config(arg=None):
  arg = configlib.parse_arg(arg, classification=False, regression=False, forecast=False)
  chosen = [k for k in KINDS if arg[k]]
  if len(chosen) > 1:
    raise validate.ConfigError(f"configs/data.py: choose one kind of {', '.join(KINDS)}; "
                               f"got {', '.join(chosen)}")
  kind = chosen[0] if chosen else "classification"
  config = configlib.base_config()

  config.task.name = "data"
  config.task.kind = kind
  config.task.train = ""  # the file to learn from (required)
  config.task.test = ""  # a test file; "" holds out task.test_fraction of task.train
  config.task.test_fraction = 0.2
  config.task.validation_fraction = 0.1  # of the whole: early stopping and the best step
  # classes and targets: cross-validation folds of the labelled sequences instead of a
  # validation split; member m of the population validates on fold m % folds and
  # trains on the others (0: every member validates on the validation split; measured:
  # docs/real_data.md). With folds, population.select="best" compares members judged
  # on different folds.
  config.task.folds = 0
  config.task.split_seed = 0
  config.task.label = ""  # CSV: the label column's name; "" the last column
  config.task.time_column = ""  # CSV: one step a row, ordered by this column (long format)
  # forecast: `window` past steps in (0: 48, or a season if longer, shortened to fit a
  # short series), the next `horizon` out; the seasonal-naive baseline uses `season`
  # steps (0: from the time column's dates: monthly 12, quarterly 4, weekly 52, daily 7,
  # hourly 24).
  config.task.window = 0
  config.task.horizon = 12
  config.task.season = 0
  # forecast: read each window relative to its last value, and forecast changes from it
  # (a series' level moves; its changes look alike along it).
  config.task.relative = True
  # forecast: learn the log of the values (all above 0), for series whose season and
  # noise grow with their level.
  config.task.log = False
  # classes and targets: normalise by the training set's mean and std per feature
  # ("dataset"), each sequence by its own ("series"), "both" side by side, or "auto":
  # "both", or "dataset" when every training sequence is z-normalised already
  # (measured: docs/real_data.md).
  config.task.normalize = "auto"

  config.model.hidden = 64
  config.model.head_hidden = (64,) if kind != "forecast" else ()
  # Classes from the maximum of each LSTM output over time (measured on UCR/UEA data:
  # docs/real_data.md); a regression reads the last state.
  config.model.pool = "max" if kind == "classification" else "last"
  # Sequences longer than 256 steps are read in patches of steps, at most 256 of them
  # (as accurate on UCR/UEA data, several times faster: docs/real_data.md).
  config.model.patch = 0
  config.model.activation = "relu"

  configlib.keras_fit(config, batch_size=32, epochs=100)
  # A small file's epoch is a step or two: train at least this many steps.
  config.train.min_steps = 1000
  config.train.learning_rate = 3e-3
  config.train.grad_clip = 1.0
  config.train.eval_every = -1  # every epoch
  config.train.early_stopping = 50  # epochs without a better validation figure
  # or this many steps, where that comes first: a large file's 50 epochs are many steps
  config.train.early_stopping_steps = 400
  config.train.keep_best = True
  # Classes and targets: five seeds trained as one program, their predictions averaged
  # (measured on UCR/UEA data: docs/real_data.md; each member keeps its best step).
  if kind != "forecast":
    config.population.seeds = 5
    config.population.select = "ensemble"
  # On one CPU device the members' steps one after another were faster than side by
  # side (docs/real_data.md); elsewhere side by side.
  config.population.loop = "auto"
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  return configlib.finish(config, arg, quick=_quick)


def _quick(config):
  config.model.hidden = 16
  config.population.seeds = min(config.population.seeds, 3)  # a smaller ensemble
  config.train.early_stopping = 0
  config.train.min_steps = 0
