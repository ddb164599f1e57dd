"""Helpers for config files: the arg parser and the groups every config shares.

A config file's `get_config(arg=None)` receives what follows the colon in
`--config=configs/freq.py:max_freq=30,seed`: comma-separated `key=value`
pairs and bare flags (big_vision style).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from collections.abc import Callable
from typing import Any

import ml_collections

from seqjax.config import validate

# Args every config file takes (see `finish`).
COMMON_ARGS = {"seed": False, "quick": False, "steps": 0}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `"a=1,flag"` against `defaults` and `COMMON_ARGS`; unknown keys are a ConfigError.

  Bare words set booleans to True; values are Python literals when they
  parse (`30`, `0.1`, `True`) and strings otherwise, and must have the type
  of their default.
  """
  defaults = {**COMMON_ARGS, **defaults}
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise validate.ConfigError(f"config arg {item!r} is unknown; allowed args: "
                                 + ", ".join(defaults))
    if not _:
      value = True
    else:
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = raw
    expected = type(defaults[key])
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
      raise validate.ConfigError(f"config arg {item!r} is invalid: {key} must be a "
                                 f"{expected.__name__}")
    out[key] = value
  return ml_collections.ConfigDict(out)


def configs_dir() -> str:
  """The repository's `configs/`: beside the (editable) package, or in the cwd.

  Raises FileNotFoundError when neither has one.
  """
  repository = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
  for root in (repository, os.getcwd()):
    path = os.path.join(root, "configs")
    if os.path.isfile(os.path.join(path, "freq.py")):
      return path
  raise FileNotFoundError("configs/ not found: run from the seqjax repository "
                          "(installed with pip install -e .)")


def load_module(path: str, name: str):
  """The Python module of the config file at `path` (imported under `name`)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of `configs/<name>.py`, locked, as `--config=configs/<name>.py:<arg>`
  loads it (a field that does not exist cannot be set)."""
  module = load_module(os.path.join(configs_dir(), f"{name}.py"), f"seqjax_config_{name}")
  config = module.get_config(arg)
  config.lock()
  return config


def get(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field (`"model.kernel_gain"`) of `config`."""
  for part in field.split("."):
    config = config[part]
  return config


def override(config: ml_collections.ConfigDict,
             values: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields replaced; unknown fields are a ConfigError."""
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  for field, value in values.items():
    *groups, key = field.split(".")
    node = config
    for g in groups:
      node = node[g] if g in node else None
      if node is None:
        break
    if node is None or key not in node:
      raise validate.ConfigError(f"sweep field {field!r} is not a config field")
    node[key] = value
  return config


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; config files fill in `task` and override the rest."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.allow_config_change = False  # resume a workdir whose config.json differs

  config.task = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.hidden = 32
  config.model.num_layers = 1
  config.model.head_hidden = ()
  # A sequence's one prediction (classes, targets) reads its last valid output ("last"),
  # the mean or maximum over its valid steps ("mean", "max"), or their average weighted
  # by a learned score of each ("attention").
  config.model.pool = "last"
  # Steps the LSTM reads as one (one prediction a sequence); 0 chooses, leaving at most
  # 256 patches of the longest training sequence.
  config.model.patch = 1
  # A convolutional branch beside the LSTM (one prediction a sequence): channels and
  # window lengths of each layer; () for none.
  config.model.conv = ()
  config.model.conv_kernels = ()
  config.model.activation = "relu"
  config.model.out_activation = "none"
  config.model.dropout = 0.0  # the head's, after each of its hidden Dense layers
  config.model.bidirectional = False  # each layer also reads the sequence backwards
  config.model.merge = "concat"  # how a bidirectional layer joins its directions: or "sum"
  config.model.layer_dropout = 0.0  # between stacked LSTM layers (PyTorch's dropout)
  # Keras' dropout and recurrent_dropout: one mask per sequence, on each layer's input
  # and on h before the recurrent matmul
  config.model.input_dropout = 0.0
  config.model.recurrent_dropout = 0.0
  # Augmentation while training: Gaussian noise of this std on every (normalised) input,
  # and each sequence's features scaled by a factor around 1 of this std.
  config.model.input_noise = 0.0
  config.model.input_scaling = 0.0
  # Inputs read both ways (configs/data.py's task.normalize): the share of training
  # sequences whose level half is zeroed (set to the training set's mean level).
  config.model.view_dropout = 0.0
  config.model.kernel_init = "glorot_uniform"
  config.model.kernel_gain = 1.0
  config.model.recurrent_init = "orthogonal"
  config.model.recurrent_gain = 1.0
  config.model.bias_init = "zeros"
  config.model.forget_bias = 1.0
  config.model.chrono_tmax = 0.0  # > 0: chrono init of gate biases, timescales up to this
  config.model.reverse = False  # read each sequence from its last step to its first
  config.model.unroll = 0  # 0: by shape and platform (lstm.auto_unroll)
  config.model.remat = 0  # recompute chunks of this many steps in the backward pass; -1: by shape
  config.model.fused = True  # the hand-written VJP; False: JAX's autodiff of the scan
  # What runs the recurrence: "xla" (lax.scan), "pallas" (one fused kernel for the whole
  # sequence; interpreted, slowly, off NVIDIA GPUs), "auto" (Pallas where measured faster)
  config.model.kernel = "auto"
  config.model.dtype = "float32"  # matmul operands; the carry and gate math stay float32
  config.model.param_dtype = "float32"
  # Matmul precision (jax.lax.Precision) of the LSTM and its head: "highest" is float32
  # arithmetic on every backend; "default" lets GPUs use TF32 and TPUs one bfloat16 pass.
  config.model.precision = "highest"

  config.train = ml_collections.ConfigDict()
  config.train.steps = 1000
  config.train.epochs = 0  # > 0 (finite datasets): steps = epochs * steps per epoch
  # With epochs: at least this many steps (whole epochs), so that a small dataset,
  # whose epoch is a step or two, still trains.
  config.train.min_steps = 0
  config.train.batch_size = 32
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.schedule = "constant"
  config.train.warmup_steps = 0
  config.train.end_lr_factor = 0.01
  config.train.weight_decay = 0.0
  config.train.grad_clip = 0.0  # 0: no clipping
  config.train.log_every = 100
  config.train.eval_every = 1000  # 0: once, at the end
  config.train.checkpoint_every = 1000
  config.train.eval_batch_size = 1024
  # Early stopping: end training after this many validation evaluations without improvement
  # (0: off), or after early_stopping_steps steps without it where that comes first (0: no
  # limit). keep_best: predict with (and report) the best evaluation's parameters.
  config.train.early_stopping = 0
  config.train.early_stopping_steps = 0
  config.train.keep_best = False

  # A population: several members trained as one vmapped program. seeds: members with
  # seeds seed, seed + 1, ...; learning_rates: each seed at each of these rates (empty:
  # train.learning_rate). select: what results.json reports and predict uses: "all"
  # (each member, their mean and spread), "best" (by the validation metric) or
  # "ensemble" (the members' averaged predictions).
  config.population = ml_collections.ConfigDict()
  config.population.seeds = 1
  config.population.learning_rates = ()
  config.population.select = "all"
  # How one program runs the members' train steps: "vmap" (side by side: batched matrix
  # products), "map" (one after another, `lax.map`), or "auto": "map" where the members
  # share one CPU device (`mesh.model` 1), where it was measured faster
  # (docs/real_data.md), else "vmap". A resumed run may change it.
  config.population.loop = "vmap"

  # Devices (jax.sharding): `data` splits batches, `model` the members of a population;
  # -1: all devices not taken by the other axis. Changing the mesh keeps a run resumable.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1
  # A CPU-only host as several XLA devices, so `data` can split the batch over its
  # cores: -1 the most (up to the cores) that divide train.batch_size and leave each
  # enough work (sharding.auto_cpu_devices), 0 JAX's one device, N exactly N. Applied
  # by seqjax.main before JAX starts; XLA_FLAGS' host device count, if set, wins.
  config.mesh.cpu_devices = -1
  return config


def from_saved(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A run's saved config (its config.json), with every field added to seqjax since it
  was written at its default, as a resumed run has them."""
  def fill(default, given):
    if isinstance(default, dict) and isinstance(given, dict):
      return {**default, **{k: fill(default.get(k), v) for k, v in given.items()}}
    return given
  defaults = json.loads(base_config().to_json_best_effort())
  return ml_collections.ConfigDict(fill(defaults, saved))


def make_quick(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a smoke run of a few seconds (big_vision's `runlocal`)."""
  config.model.hidden = min(config.model.hidden, 16)
  config.model.head_hidden = tuple(min(w, 16) for w in config.model.head_hidden)
  config.train.steps = 20
  config.train.epochs = 0
  config.train.warmup_steps = min(config.train.warmup_steps, 5)
  config.train.log_every = 10
  config.train.eval_every = 10
  config.train.checkpoint_every = 10


def finish(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict,
           quick: Callable[[ml_collections.ConfigDict], None] | None = None
           ) -> ml_collections.ConfigDict:
  """The tail every config file ends with: `quick` shrinks the run (`make_quick`, then
  the config's own `quick(config)` for its task fields); `steps=N` sets train.steps
  last, so `quick,steps=100` runs 100 steps of the quick run."""
  if arg.quick:
    make_quick(config)
    if quick is not None:
      quick(config)
  if arg.steps:
    config.train.steps = arg.steps
    config.train.epochs = 0
  return config


def seqjax_training(config: ml_collections.ConfigDict, *, steps: int, batch_size: int,
                    learning_rate: float = 3e-3, warmup_steps: int = 100, log_every: int = 200,
                    every: int = 1000) -> None:
  """The defaults that beat the seeds: Adam, warmup + cosine decay, clipping at norm 1."""
  t = config.train
  t.steps, t.batch_size, t.learning_rate = steps, batch_size, learning_rate
  t.schedule, t.warmup_steps, t.grad_clip = "warmup_cosine", warmup_steps, 1.0
  t.log_every, t.eval_every, t.checkpoint_every = log_every, every, every


def keras_fit(config: ml_collections.ConfigDict, *, batch_size: int, epochs: int = 0) -> None:
  """The seeds' `compile('adam')` + `fit`: Adam 1e-3, constant rate, no clipping."""
  t = config.train
  t.epochs, t.batch_size, t.learning_rate = epochs, batch_size, 1e-3
  t.schedule, t.warmup_steps, t.grad_clip = "constant", 0, 0.0
  t.eval_every = 0  # the test set once, at the end: the seeds' fit, then evaluate
