"""Every bad input, one table: refused in one line that names what is wrong.

A row is a `Case`: the channel the bad input comes in through (a config value, a
command line, a data file, a library call...), an id, what is given and what the
one line must name. One test runs every row by its channel's runner, so a new
refusal is a new row, and the table's size is the count of bad inputs covered.
"""

import collections
import functools
import os
import re
import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import cli_process
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sample_files import write_monthly_csv, write_shapes_csv

from seqjax.config import configlib, validate
from seqjax.data import readers, tasks
from seqjax.data.tasks import data
from seqjax.model import lstm, rollout, sequence
from seqjax.runtime import sharding
from seqjax.train import planning, programs, trainer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KEY = jax.random.key(0)
# As the LSTM tests build it: float32 arithmetic on every backend.
LSTM = functools.partial(lstm.LSTM, precision="highest")


class Case(NamedTuple):
  """One bad input.

  channel: how it comes in, the key of its runner in RUNNERS.
  id: the test id.
  given: what the runner feeds in (see the runner of the channel).
  named: what the one line must name: a field, a text or a regex, by channel.
  slow: whether the row runs only under `-m slow`.
  """
  channel: str
  id: str
  given: Any
  named: str
  slow: bool = False


# Writers of the bad files and the calls of the rows below.


def _ts_file(tmp_path, text):
  """A `.ts` file holding `text`, read as the training file."""
  (tmp_path / "bad.ts").write_text(text)
  return readers.read(str(tmp_path / "bad.ts"), "task.train")


def _task(name, **overrides):
  """The task of configs/<name>.py with `overrides` set in its task."""
  config = configlib.load(name)
  config.unlock()
  for field, value in overrides.items():
    config.task[field] = value
  return tasks.make(config.task, config.train.batch_size)


def _population(field, value):
  """Plans configs/mean.py:quick with one population field set."""
  config = configlib.override(configlib.load("mean", "quick"), {field: value})
  planning.plan(config, members=planning.population_members(config))


def _view_dropout(tmp_path, kind, normalize):
  """Plans configs/data.py[:kind] on a small file with model.view_dropout=0.5."""
  path = tmp_path / "data.csv"
  if kind == "forecast":
    write_monthly_csv(path, np.arange(1.0, 61.0))
    task = {"horizon": 3, "time_column": "month"}
  else:
    write_shapes_csv(path)
    task = {}
  config = configlib.override(configlib.load("data", kind), {
      "task.train": str(path), "task.normalize": normalize, "model.view_dropout": 0.5,
      **{f"task.{k}": v for k, v in task.items()}})
  planning.plan(config, members=planning.population_members(config))


def _augmentation(field, value):
  config = configlib.load("freq")
  config.unlock()
  config.model[field] = value
  sequence.validate_config(config.model)


@functools.cache
def _made():
  """Models, parameters and inputs the library calls misuse, made once a process."""
  from flax import nnx as flax_nnx

  from seqjax import nnx as seqjax_nnx
  randn = lambda seed, shape: jax.random.normal(jax.random.key(seed), shape)
  x2 = randn(6, (2, 5, 2))
  cell = lstm.LSTMCell(4)
  model = sequence.SequenceModel(hidden=4, out_features=2, head="per_step")
  return types.SimpleNamespace(
      x2=x2, x3=randn(7, (2, 5, 3)), params=LSTM(4).init(KEY, x2), cell=cell,
      cell_params=cell.init(KEY, (jnp.zeros((2, 4)), jnp.zeros((2, 4))), x2[:, 0]),
      model=model, model_params=model.init(KEY, x2), nnx=seqjax_nnx,
      rngs=lambda: flax_nnx.Rngs(0))


CARRY = "carry must be (h, c), each "
SHAPES = "x must be [batch, time, features]"
FEATURES = "x has 3 features a step; the parameters were made for 2"

CASES = [
    # config: (config file, its arg, the value set in the field `named`): refused before
    # compiling, in one line naming the field, a workdir the run left untouched.
    Case("config", "freq:quick task.name=fre", ("freq", "quick", "fre"), "task.name"),
    Case("config", "freq:quick task.max_freq=60", ("freq", "quick", 60), "task.max_freq"),
    Case("config", "freq:quick task.max_freq=1", ("freq", "quick", 1), "task.max_freq"),
    Case("config", "freq:quick task.time_steps=0", ("freq", "quick", 0), "task.time_steps"),
    Case("config", "freq:quick task.per_freq=-1", ("freq", "quick", -1), "task.per_freq"),
    Case("config", "mean:quick task.length=-3", ("mean", "quick", -3), "task.length"),
    Case("config", "mean:quick task.train_size=0", ("mean", "quick", 0), "task.train_size"),
    Case("config", "mean:quick task.train_size=51", ("mean", "quick", 51), "task.train_size"),
    Case("config", "echo:quick task.window=30", ("echo", "quick", 30), "task.window"),
    Case("config", "echo:quick task.lag=5", ("echo", "quick", 5), "task.lag"),
    Case("config", "echo:quick,window=1,lag=5 task.chunk=30", ("echo", "quick,window=1,lag=5", 30),
         "task.chunk"),
    Case("config", "echo:quick,seed train.batch_size=3", ("echo", "quick,seed", 3),
         "train.batch_size"),
    Case("config", "sine:quick task.width=0.0", ("sine", "quick", 0.0), "task.width"),
    Case("config", "sine:quick task.free_run=-1", ("sine", "quick", -1), "task.free_run"),
    Case("config", "freq:quick model.hidden=0", ("freq", "quick", 0), "model.hidden"),
    Case("config", "freq:quick model.num_layers=-1", ("freq", "quick", -1), "model.num_layers"),
    Case("config", "freq:quick model.recurrent_gain=0.0", ("freq", "quick", 0.0),
         "model.recurrent_gain"),
    Case("config", "freq:quick model.kernel_gain=-1.0", ("freq", "quick", -1.0),
         "model.kernel_gain"),
    Case("config", "freq:quick model.recurrent_init=ortho", ("freq", "quick", "ortho"),
         "model.recurrent_init"),
    Case("config", "freq:quick model.activation=swish2", ("freq", "quick", "swish2"),
         "model.activation"),
    Case("config", "freq:quick model.dropout=1.5", ("freq", "quick", 1.5), "model.dropout"),
    # no layer to apply it to
    Case("config", "echo:quick model.dropout=0.5", ("echo", "quick", 0.5), "model.dropout"),
    Case("config", "freq:quick model.remat=-2", ("freq", "quick", -2), "model.remat"),
    Case("config", "freq:quick model.param_dtype=float16", ("freq", "quick", "float16"),
         "model.param_dtype"),
    Case("config", "freq:quick model.dtype=float16", ("freq", "quick", "float16"), "model.dtype"),
    Case("config", "freq:quick model.chrono_tmax=-5.0", ("freq", "quick", -5.0),
         "model.chrono_tmax"),
    Case("config", "freq:quick train.batch_size=0", ("freq", "quick", 0), "train.batch_size"),
    Case("config", "freq:quick train.steps=-10", ("freq", "quick", -10), "train.steps"),
    Case("config", "freq:quick train.optimizer=adamm", ("freq", "quick", "adamm"),
         "train.optimizer"),
    Case("config", "freq:quick train.schedule=linear", ("freq", "quick", "linear"),
         "train.schedule"),
    Case("config", "freq:quick train.learning_rate=-1e-3", ("freq", "quick", -1e-3),
         "train.learning_rate"),
    Case("config", "freq:quick train.end_lr_factor=2.0", ("freq", "quick", 2.0),
         "train.end_lr_factor"),
    Case("config", "freq:quick train.grad_clip=-1.0", ("freq", "quick", -1.0), "train.grad_clip"),
    Case("config", "freq:quick train.log_every=0", ("freq", "quick", 0), "train.log_every"),
    Case("config", "freq:quick train.early_stopping_steps=-5", ("freq", "quick", -5),
         "train.early_stopping_steps"),
    # online data has no epochs
    Case("config", "freq:quick train.epochs=3", ("freq", "quick", 3), "train.epochs"),
    # Numbers that are not finite, or out of any sane range.
    Case("config", "freq:quick train.learning_rate=inf", ("freq", "quick", float("inf")),
         "train.learning_rate"),
    Case("config", "freq:quick train.grad_clip=nan", ("freq", "quick", float("nan")),
         "train.grad_clip"),
    Case("config", "freq:quick model.kernel_gain=inf", ("freq", "quick", float("inf")),
         "model.kernel_gain"),
    Case("config", "freq:quick model.forget_bias=nan", ("freq", "quick", float("nan")),
         "model.forget_bias"),
    Case("config", "freq:quick,seed model.dropout=nan", ("freq", "quick,seed", float("nan")),
         "model.dropout"),
    Case("config", "mean:quick model.chrono_tmax=nan", ("mean", "quick", float("nan")),
         "model.chrono_tmax"),
    Case("config", "freq:quick train.end_lr_factor=nan", ("freq", "quick", float("nan")),
         "train.end_lr_factor"),
    Case("config", "freq:quick model.recurrent_gain=inf", ("freq", "quick", float("inf")),
         "model.recurrent_gain"),
    Case("config", "freq:quick seed=99999999999999999999999",
         ("freq", "quick", 99999999999999999999999), "seed"),
    Case("config", "freq:quick seed=-1", ("freq", "quick", -1), "seed"),
    Case("config", "freq:quick train.steps=10**20", ("freq", "quick", 10**20), "train.steps"),
    Case("config", "freq:quick train.batch_size=10**8", ("freq", "quick", 10**8),
         "train.batch_size"),
    Case("config", "freq:quick model.hidden=10**6", ("freq", "quick", 10**6), "model.hidden"),
    # fits no device's memory
    Case("config", "freq:quick model.hidden=60000", ("freq", "quick", 60000), "model.hidden"),
    Case("config", "freq:quick train.batch_size=2**22", ("freq", "quick", 2**22),
         "train.batch_size"),  # nor this batch
    Case("config", "freq:quick model.num_layers=1000", ("freq", "quick", 1000), "model.num_layers"),
    Case("config", "freq:quick model.head_hidden=(0,)", ("freq", "quick", (0,)),
         "model.head_hidden"),
    Case("config", "freq:quick model.unroll=-1", ("freq", "quick", -1), "model.unroll"),
    Case("config", "freq:quick model.precision=fast", ("freq", "quick", "fast"), "model.precision"),
    Case("config", "freq:quick model.out_activation=softmax2", ("freq", "quick", "softmax2"),
         "model.out_activation"),
    Case("config", "freq:quick model.bias_init=ones", ("freq", "quick", "ones"), "model.bias_init"),
    Case("config", "freq:quick train.eval_every=-1", ("freq", "quick", -1), "train.eval_every"),
    Case("config", "freq:quick train.checkpoint_every=0", ("freq", "quick", 0),
         "train.checkpoint_every"),
    Case("config", "freq:quick train.eval_batch_size=0", ("freq", "quick", 0),
         "train.eval_batch_size"),
    Case("config", "freq:quick train.warmup_steps=-1", ("freq", "quick", -1), "train.warmup_steps"),
    Case("config", "freq:quick,seed train.epochs=-1", ("freq", "quick,seed", -1), "train.epochs"),
    Case("config", "freq:quick train.weight_decay=-0.1", ("freq", "quick", -0.1),
         "train.weight_decay"),
    Case("config", "freq:quick train.weight_decay=0.1", ("freq", "quick", 0.1),
         "train.weight_decay"),  # adam would train without it
    Case("config", "freq:quick model.view_dropout=1.5", ("freq", "quick", 1.5),
         "model.view_dropout"),
    Case("config", "freq:quick model.view_dropout=0.5", ("freq", "quick", 0.5),
         "model.view_dropout"),  # freq's inputs are read one way
    # a single run has one model
    Case("config", "freq:quick mesh.model=2", ("freq", "quick", 2), "mesh.model"),
    Case("config", "freq:quick task.eval_per_freq=0", ("freq", "quick", 0), "task.eval_per_freq"),
    Case("config", "mean:quick task.eval_size=0", ("mean", "quick", 0), "task.eval_size"),
    Case("config", "echo:quick task.classes=0", ("echo", "quick", 0), "task.classes"),
    Case("config", "echo:quick task.seq_len=0", ("echo", "quick", 0), "task.seq_len"),
    Case("config", "echo:quick task.eval_size=0", ("echo", "quick", 0), "task.eval_size"),
    Case("config", "sine:quick task.time_steps=0", ("sine", "quick", 0), "task.time_steps"),
    Case("config", "sine:quick task.rollout_warmup=0", ("sine", "quick", 0), "task.rollout_warmup"),
    Case("config", "sine:quick task.rollout_size=0", ("sine", "quick", 0), "task.rollout_size"),
    Case("config", "sine:quick task.eval_size=0", ("sine", "quick", 0), "task.eval_size"),
    Case("config", "sine:quick model.bidirectional=True", ("sine", "quick", True),
         "model.bidirectional"),  # free-running
    Case("config", "sine:quick,seed model.bidirectional=True", ("sine", "quick,seed", True),
         "model.bidirectional"),  # next value
    Case("config", "echo:quick,seed model.bidirectional=True", ("echo", "quick,seed", True),
         "model.bidirectional"),
    Case("config", "freq:quick model.merge=mean", ("freq", "quick", "mean"), "model.merge"),
    Case("config", "freq:quick model.layer_dropout=0.2", ("freq", "quick", 0.2),
         "model.layer_dropout"),  # one layer
    Case("config", "freq:quick model.input_dropout=1.0", ("freq", "quick", 1.0),
         "model.input_dropout"),
    Case("config", "freq:quick model.recurrent_dropout=-0.1", ("freq", "quick", -0.1),
         "model.recurrent_dropout"),
    Case("config", "freq:quick model.kernel=cudnn", ("freq", "quick", "cudnn"), "model.kernel"),

    # command: a command line (module first) that exits 2 in one line naming `named`,
    # with nothing run: no workdir made, no traceback. Each starts a Python process; the
    # default selection keeps those whose check no config-channel row above or other
    # command row makes the same way.
    Case("command", "seqjax.main --config=configs/freq.py --config.train.learning_rate=inf",
         ["seqjax.main", "--config=configs/freq.py", "--config.train.learning_rate=inf"],
         "train.learning_rate", slow=True),
    Case("command", "seqjax.main --config=configs/freq.py --config.seed=99999999999999999999999",
         ["seqjax.main", "--config=configs/freq.py", "--config.seed=99999999999999999999999"],
         "seed"),
    Case("command", "seqjax.main --config=configs/freq.py --config.mesh.cpu_devices=100000",
         ["seqjax.main", "--config=configs/freq.py", "--config.mesh.cpu_devices=100000"],
         "mesh.cpu_devices"),
    Case("command", "seqjax.main --config=configs/freq.py extra",
         ["seqjax.main", "--config=configs/freq.py", "extra"], "unexpected arguments"),
    Case("command", "seqjax.main --config=configs/data.py:quick,regression,forecast",
         ["seqjax.main", "--config=configs/data.py:quick,regression,forecast"],
         "choose one kind"),
    Case("command", "seqjax.main --config=configs/freq.py --config.train.stepz=5",
         ["seqjax.main", "--config=configs/freq.py", "--config.train.stepz=5"],
         "unknown config field 'stepz'"),
    Case("command", "seqjax.main --config=configs/freq.py --config.trian.steps=5",
         ["seqjax.main", "--config=configs/freq.py", "--config.trian.steps=5"],
         "unknown config field 'trian'", slow=True),
    Case("command", "seqjax.main --config=configs/freq.py:max_freq=60",
         ["seqjax.main", "--config=configs/freq.py:max_freq=60"],
         "config.task.max_freq=60 is invalid: allowed 2..50", slow=True),
    Case("command", "seqjax.main --config=configs/mean.py --config.task.length=-3",
         ["seqjax.main", "--config=configs/mean.py", "--config.task.length=-3"],
         "config.task.length=-3 is invalid", slow=True),
    Case("command", "seqjax.main --config=configs/freq.py:maxfreq=3",
         ["seqjax.main", "--config=configs/freq.py:maxfreq=3"],
         "config arg 'maxfreq=3' is unknown"),
    Case("command", "seqjax.main --config=configs/freq.py --config.model.recurrent_gain=0",
         ["seqjax.main", "--config=configs/freq.py", "--config.model.recurrent_gain=0"],
         "model.recurrent_gain=0", slow=True),
    Case("command", "seqjax.main --config=configs/nope.py",
         ["seqjax.main", "--config=configs/nope.py"], "cannot load the config file"),
    Case("command", "seqjax.sweep --config=configs/mean.py:seed --config.train.stepz=3",
         ["seqjax.sweep", "--config=configs/mean.py:seed", "--config.train.stepz=3"], "stepz"),
    Case("command", "seqjax.sweep --config=configs/mean.py:seed --throughput=-5",
         ["seqjax.sweep", "--config=configs/mean.py:seed", "--throughput=-5"], "--throughput",
         slow=True),
    Case("command", "seqjax.sweep --config=configs/mean.py:seed --sweep=nope",
         ["seqjax.sweep", "--config=configs/mean.py:seed", "--sweep=nope"], "--sweep"),
    Case("command", "seqjax.sweep --config=configs/mean.py:seed --converged=nan",
         ["seqjax.sweep", "--config=configs/mean.py:seed", "--converged=nan"], "--converged"),
    Case("command", "seqjax.bench --repeats=0", ["seqjax.bench", "--repeats=0"], "--repeats"),
    Case("command", "seqjax.bench --repeats=-3", ["seqjax.bench", "--repeats=-3"], "--repeats"),
    Case("command", "seqjax.bench --shapes=", ["seqjax.bench", "--shapes="], "--shapes"),
    Case("command", "seqjax.bench --peers=keras2", ["seqjax.bench", "--peers=keras2"], "--peers"),
    Case("command", "seqjax.bench --unroll=0", ["seqjax.bench", "--unroll=0"], "--unroll"),
    Case("command", "seqjax.scaling --config=configs/freq.py --devices=0",
         ["seqjax.scaling", "--config=configs/freq.py", "--devices=0"], "--devices"),
    Case("command", "seqjax.scaling --config=configs/freq.py --steps=0",
         ["seqjax.scaling", "--config=configs/freq.py", "--steps=0"], "--steps", slow=True),

    # workdir: a finished run whose config.json is damaged, run again from the command
    # line: exits 2 in one line naming `named`, the workdir untouched.
    Case("workdir", "config.json deleted", "deleted", "config.json"),
    Case("workdir", "config.json truncated", "truncated", "config.json"),
    Case("workdir", "config.json a list", "a list", "config.json"),

    # file: (writer of the file at the path it is given or None for no file, task fields
    # of configs/data.py with "kind" and the file's "suffix"); `named` is a regex.
    Case("file", "missing file", (None, {}), r"task\.train='.*missing\.csv': no such file"),
    Case("file", "unknown extension",
         (lambda p: p.write_text("1,2\n"), {"suffix": ".txt"}),
         r"unknown extension '\.txt'; allowed: \.npy, \.npz, \.csv"),
    Case("file", "x and y of other lengths",
         (lambda p: np.savez(p, x=np.zeros((4, 5)), y=np.zeros(3)), {"suffix": ".npz"}),
         "x and y hold different numbers of sequences: x has 4, y has 3"),
    Case("file", "a fractional label",
         (lambda p: p.write_text("a,b,label\n1,2,0.5\n3,4,1\n"), {}),
         r"classification needs integer labels; found 0\.5"),
    Case("file", "NaN inside a sequence",
         (lambda p: p.write_text("a,b,c,label\n1,nan,2,0\n3,4,5,1\n"), {}),
         "sequence 0 has NaN at step 1, inside the sequence"),
    Case("file", "an empty file", (lambda p: p.write_text(""), {}), "the file is empty"),
    Case("file", "one class",
         (lambda p: p.write_text("a,b,label\n1,2,0\n3,4,0\n5,6,0\n7,8,0\n"), {}),
         "every label is 0: classification needs at least two classes"),
    Case("file", "no label column",
         (lambda p: p.write_text("a,b,y\n1,2,0\n3,4,1\n"), {"label": "target"}),
         r"no column 'target' in the header \(columns: a, b, y\)"),
    Case("file", "window and horizon longer than the series",
         (lambda p: p.write_text("t,v\n" + "".join(f"{i},{i}\n" for i in range(30))),
          {"kind": "forecast", "time_column": "t", "horizon": 25, "window": 10}),
         "task.window=10 plus task.horizon=25 steps is longer than the longest series"),
    Case("file", "horizon as long as the series",
         (lambda p: p.write_text("t,v\n" + "".join(f"{i},{i}\n" for i in range(30))),
          {"kind": "forecast", "time_column": "t", "horizon": 30}),
         "task.horizon=30 steps is as long as the longest series"),
    Case("file", "an infinite value",
         (lambda p: p.write_text("a,b,label\n1,inf,0\n3,4,1\n"), {}),
         "sequence 0 has an infinite value at step 1"),
    Case("file", "a value beyond float32",
         (lambda p: p.write_text("a,b,label\n1,1e300,0\n3,4,1\n"), {}),
         r"x holds 1e\+300 \(sequence 0, step 1, feature 0, column 'b'\); values must lie "
         r"within ±3.40282e\+38 \(float32's range\)"),
    Case("file", "a target beyond 1e15",
         (lambda p: p.write_text("a,b,y\n1,2,1e30\n3,4,1\n5,6,2\n"), {"kind": "regression"}),
         r"y holds 1e\+30 \(sequence 0, target 0\); values must lie within ±1e\+15 \(a "
         r"squared error's sum must fit float32\)"),
    Case("file", "a series of 1e38",
         (lambda p: np.save(p, np.full(100, 1e38)), {"kind": "forecast", "suffix": ".npy"}),
         r"x holds 1e\+38 \(sequence 0, step 0, feature 0\)"),
    Case("file", "an unnamed first column",
         (lambda p: p.write_text(",t0,t1,label\n0,1,2,0\n1,3,4,1\n"), {}),
         r"the first column has no name \(a pandas index\?\)"),
    Case("file", "ambiguous dates",
         (lambda p: p.write_text("day,v\n1/10/2020,1\n1/2/2020,2\n"),
          {"kind": "forecast", "time_column": "day"}), "neither numbers nor ISO dates"),
    Case("file", "a time twice",
         (lambda p: p.write_text("t,v\n1,1\n2,2\n2,3\n"),
          {"kind": "forecast", "time_column": "t"}), "time 2.0 appears in 2 rows"),
    Case("file", "an empty time",
         (lambda p: p.write_text("t,v\n2020-01-01,1\n,2\n2020-01-03,3\n"),
          {"kind": "forecast", "time_column": "t"}), "task.time_column='t' is empty in row 3"),
    Case("file", "a ragged .npz",
         (lambda p: np.savez(p, x=np.array([[1.0], [1.0, 2.0]], dtype=object), y=np.zeros(2)),
          {"suffix": ".npz"}), "an array of the .npz is not numeric"),
    Case("file", "a word among numbers",
         (lambda p: p.write_text("a,b,label\n1,2,0\nx,4,1\n"), {}), "row 3, column 1 is 'x'"),
    Case("file", "log of a series holding 0",
         (lambda p: write_monthly_csv(p, np.asarray([5.0] * 20 + [0.0] + [5.0] * 40)),
          {"kind": "forecast", "log": True, "horizon": 3, "time_column": "month"}),
         r"task.log=True takes the log of every value, and sales is 0 at step 20 of series 0"),
    Case("file", "log of a regression",
         (lambda p: write_monthly_csv(p, np.asarray([5.0] * 61)),
          {"kind": "regression", "log": True, "horizon": 3}),
         r"task.log=True is invalid: applies to forecasts"),
    Case("file", "normalize=minmax",
         (lambda p: write_shapes_csv(p)[0], {"normalize": "minmax", "horizon": 3}),
         "task.normalize='minmax' is invalid: allowed: dataset, series, both, auto"),
    Case("file", "normalize=series of a forecast",
         (lambda p: write_monthly_csv(p, np.arange(1.0, 61.0)),
          {"kind": "forecast", "normalize": "series", "horizon": 3, "time_column": "month"}),
         r"task.normalize='series' is invalid: must be 'dataset' or 'auto' for a forecast"),
    Case("file", "folds=1",
         (lambda p: write_shapes_csv(p)[0], {"folds": 1}),
         r"task.folds=1 is invalid: must be 0 \(a validation split\) or from 2 to 64"),
    Case("file", "folds=65",
         (lambda p: write_shapes_csv(p)[0], {"folds": 65}),
         r"task.folds=65 is invalid: must be an integer in 0..64"),
    Case("file", "folds of a forecast",
         (lambda p: write_monthly_csv(p, np.arange(1.0, 61.0)),
          {"kind": "forecast", "folds": 3, "horizon": 3, "time_column": "month"}),
         r"task.folds=3 is invalid: applies to classes and targets"),
    Case("file", "fewer labelled sequences than two a fold",
         (lambda p: write_shapes_csv(p, n=10)[0], {"folds": 5}),
         r"8 labelled sequences are too few for task.folds=5 \(at least 2 a fold\)"),

    # check: a call (given tmp_path) of the library's own checks of a config or a file:
    # a ConfigError in one line matching the regex `named`.
    Case("check", "freq max_freq=51", lambda _: _task("freq", max_freq=51),
         r"^config\.task\.max_freq="),
    Case("check", "freq max_freq=1", lambda _: _task("freq", max_freq=1),
         r"^config\.task\.max_freq="),
    Case("check", "mean length=-3", lambda _: _task("mean", length=-3), r"^config\.task\.length="),
    Case("check", "mean train_size=201", lambda _: _task("mean", train_size=201),
         r"^config\.task\.train_size="),
    Case("check", "echo window=30", lambda _: _task("echo", window=30), r"^config\.task\.window="),
    Case("check", "echo lag=5", lambda _: _task("echo", lag=5), r"^config\.task\.lag="),
    Case("check", "sine width=0.0", lambda _: _task("sine", width=0.0), r"^config\.task\.width="),
    Case("check", "population.seeds=0", lambda _: _population("population.seeds", 0),
         "population.seeds=0"),
    Case("check", "population.learning_rates=(1e-3, -1.0)",
         lambda _: _population("population.learning_rates", (1e-3, -1.0)),
         "population.learning_rates=-1.0"),
    Case("check", "population.select=median",
         lambda _: _population("population.select", "median"),
         "must be one of all, best, ensemble"),
    Case("check", "population.loop=scan",
         lambda _: _population("population.loop", "scan"),
         r"^config\.population\.loop='scan' is invalid: must be one of vmap, map, auto"),
    Case("check", "mesh -1x-1", lambda _: sharding.mesh_shape(-1, -1, 8, 1),
         r"mesh.data=-1 is invalid: and mesh.model cannot both be -1"),
    Case("check", "mesh 0x1", lambda _: sharding.mesh_shape(0, 1, 8, 1),
         r"mesh.data=0 is invalid: must be -1 \(all devices\) or a positive"),
    Case("check", "mesh -1x3 of 8", lambda _: sharding.mesh_shape(-1, 3, 8, 1),
         r"mesh.model=3 is invalid: must divide the 8 devices"),
    Case("check", "mesh 16x1 of 8", lambda _: sharding.mesh_shape(16, 1, 8, 1),
         r"mesh='16x1' is invalid: needs data\*model <= the 8 devices"),
    Case("check", "mesh 4x1 of 8 on 2 hosts", lambda _: sharding.mesh_shape(4, 1, 8, 2),
         r"needs data\*model = the 8 devices of this multi-host job"),
    Case("check", "mesh 1.5x1", lambda _: sharding.mesh_shape(1.5, 1, 8, 1),
         r"mesh.data=1.5 is invalid"),
    Case("check", "cpu_devices=-2", lambda _: sharding.set_cpu_devices(-2, 32),
         "mesh.cpu_devices"),
    Case("check", "cpu_devices=1.5", lambda _: sharding.set_cpu_devices(1.5, 32),
         "mesh.cpu_devices"),
    Case("check", "cpu_devices=True", lambda _: sharding.set_cpu_devices(True, 32),
         "mesh.cpu_devices"),
    Case("check", "cpu_devices='2'", lambda _: sharding.set_cpu_devices("2", 32),
         "mesh.cpu_devices"),
    Case("check", "model.input_noise=-0.1", lambda _: _augmentation("input_noise", -0.1),
         r"model.input_noise=-0.1 is invalid"),
    Case("check", "view_dropout, read one way",
         lambda p: _view_dropout(p, "classification", "dataset"),
         r"model.view_dropout=0.5 is invalid: acts on sequences read two ways"),
    Case("check", "view_dropout of a forecast", lambda p: _view_dropout(p, "forecast", "auto"),
         r"model.view_dropout=0.5 is invalid: acts on sequences read two ways"),
    Case("check", "model.input_scaling=11.0", lambda _: _augmentation("input_scaling", 11.0),
         r"model.input_scaling=11.0 is invalid"),
    # A .ts file: the line names the file (task.train=) and its line.
    Case("check", ".ts with time stamps",
         lambda tmp: _ts_file(tmp, "@timeStamps true\n@data\n(1,2):a\n"),
         r"task\.train=.*@timeStamps true is not supported"),
    Case("check", ".ts with a word among numbers",
         lambda tmp: _ts_file(tmp, "@classLabel true a b\n@data\n1,x,3:a\n"),
         r"task\.train=.*line 3: could not convert"),
    Case("check", ".ts without a label",
         lambda tmp: _ts_file(tmp, "@classLabel true a b\n@data\n1,2,3\n"),
         r"task\.train=.*line 3: no label"),
    Case("check", ".ts without @data", lambda tmp: _ts_file(tmp, "@classLabel true a\n"),
         r"task\.train=.*no @data line"),
    Case("check", ".ts of ragged dimensions", lambda tmp: _ts_file(tmp, "@data\n1,2:3\n1,2\n"),
         r"task\.train=.*line 3: 1 dimensions; the first case has 2"),

    # library: a call (given the models and inputs of `_made`) that raises a ValueError
    # matching the regex `named`.
    Case("library", "LSTM of 2 layers given one layer's carry",
         lambda _: lstm.LSTM(8, 2).init(KEY, jnp.ones((2, 5, 3)), carry=(
             jnp.zeros((1, 2, 8)), jnp.zeros((1, 2, 8)))),
         re.escape(CARRY + "[num_layers * directions, batch, hidden]")),
    Case("library", "LSTM x [5, 3]", lambda _: lstm.LSTM(8).init(KEY, jnp.ones((5, 3))),
         re.escape(SHAPES)),
    Case("library", "LSTM x [5]", lambda _: lstm.LSTM(8).init(KEY, jnp.ones((5,))),
         re.escape(SHAPES)),
    Case("library", "LSTM x [1, 2, 5, 3]",
         lambda _: lstm.LSTM(8).init(KEY, jnp.ones((1, 2, 5, 3))), re.escape(SHAPES)),
    Case("library", "LSTM hidden=0", lambda _: lstm.LSTM(0).init(KEY, jnp.ones((2, 5, 3))),
         re.escape("hidden must be an integer >= 1")),
    Case("library", "LSTM num_layers=0",
         lambda _: lstm.LSTM(8, 0).init(KEY, jnp.ones((2, 5, 3))),
         re.escape("num_layers must be an integer >= 1")),
    Case("library", "LSTM remat=-2",
         lambda _: lstm.LSTM(8, remat=-2).init(KEY, jnp.ones((2, 5, 3))),
         re.escape("remat must be an integer >= -1")),
    Case("library", "LSTMLayer lengths past the end",
         lambda _: lstm.LSTMLayer(8).init(KEY, jnp.ones((2, 5, 3)), lengths=np.array([7, 2])),
         re.escape("lengths must be within [0, 5]")),
    Case("library", "LSTMLayer lengths of another batch",
         lambda _: lstm.LSTMLayer(8).init(KEY, jnp.ones((2, 5, 3)), lengths=np.array([3])),
         re.escape("lengths must be [batch]")),
    Case("library", "LSTMLayer mask of another length",
         lambda _: lstm.LSTMLayer(8).init(KEY, jnp.ones((2, 5, 3)), mask=np.ones((2, 4), bool)),
         re.escape("mask must be [batch, time]")),
    Case("library", "LSTMLayer carry of another hidden",
         lambda _: lstm.LSTMLayer(8).init(KEY, jnp.ones((2, 5, 3)), carry=(
             jnp.zeros((2, 7)), jnp.zeros((2, 7)))),
         re.escape(CARRY + "[batch, hidden]")),
    Case("library", "features into LSTM", lambda m: LSTM(4).apply(m.params, m.x3), FEATURES),
    Case("library", "features into LSTMCell",
         lambda m: m.cell.apply(m.cell_params, m.cell.initialize_carry(KEY, (2, 3)), m.x3[:, 0]),
         FEATURES),
    Case("library", "features into rollout",
         lambda m: rollout.rollout(m.model, m.model_params, m.x3, 2), FEATURES),
    Case("library", "features into nnx.LSTMCell",
         lambda m: m.nnx.LSTMCell(2, 4, rngs=m.rngs())(
             (jnp.zeros((2, 4)), jnp.zeros((2, 4))), m.x3[:, 0]), r"x_t must be \[batch, 2\]"),
    Case("library", "no features", lambda m: LSTM(4).init(KEY, jnp.zeros((2, 5, 0))),
         "x has 0 features a step"),
    Case("library", "nnx no features", lambda m: m.nnx.LSTM(0, 8, rngs=m.rngs()),
         "in_features must be an integer >= 1"),
    Case("library", "rollout steps 0",
         lambda m: rollout.rollout(m.model, m.model_params, m.x2, 0),
         "steps must be an integer >= 1"),
    Case("library", "rollout steps -3",
         lambda m: rollout.rollout(m.model, m.model_params, m.x2, -3),
         "steps must be an integer >= 1"),
    Case("library", "rollout steps 2.5",
         lambda m: rollout.rollout(m.model, m.model_params, m.x2, 2.5),
         "steps must be an integer >= 1"),
    Case("library", "rollout empty prefix",
         lambda m: rollout.rollout(m.model, m.model_params, m.x2[:, :0], 3),
         r"prefix must be \[batch, time >= 1, features\]"),
    Case("library", "float lengths",
         lambda m: LSTM(4).apply(m.params, m.x2, lengths=jnp.array([1.5, 2.0])),
         "lengths must be integers"),
    Case("library", "float mask",
         lambda m: LSTM(4).apply(m.params, m.x2, mask=jnp.full((2, 5), 0.5)),
         "mask must be bool"),
    Case("library", "complex x", lambda m: LSTM(4).apply(m.params, m.x2.astype(jnp.complex64)),
         "x must hold real numbers; got complex64"),
]


def _run(args, **kw):
  return cli_process.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def _one_error_line(result, code, named):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == code, result.stderr
  assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines


def _refused_config(case, tmp_path, request):
  """Refused before compiling, in one line naming the field; an existing workdir untouched."""
  monkeypatch = request.getfixturevalue("monkeypatch")
  snapshot = request.getfixturevalue("snapshot")
  name, arg, value = case.given
  good = configlib.load(name, arg)
  config = configlib.override(good, {case.named: value})
  compiled = []
  monkeypatch.setattr(programs, "make_train_loop", lambda *a: compiled.append(1))
  workdir = tmp_path / "wd"  # as a run left it: its config, a checkpoint and a metrics line
  (workdir / "checkpoints" / "10").mkdir(parents=True)
  (workdir / "config.json").write_text(good.to_json_best_effort(indent=2))
  (workdir / "metrics.jsonl").write_text('{"step": 10, "split": "train", "loss": 1.0}\n')
  before = snapshot(workdir)
  with pytest.raises(validate.ConfigError) as info:
    trainer.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert "\n" not in message and f"config.{case.named}=" in message
  assert not compiled and snapshot(workdir) == before


def _refused_command(case, tmp_path, request):
  """Exit 2 and one line, before anything runs: no workdir made, no traceback."""
  args = [sys.executable, "-m", *case.given]
  if case.given[0] in ("seqjax.main", "seqjax.sweep"):
    args.append(f"--workdir={tmp_path / 'wd'}")
  result = _run(args)
  _one_error_line(result, 2, case.named)
  assert "Traceback" not in result.stdout + result.stderr
  assert not (tmp_path / "wd").exists()


def _refused_workdir(case, tmp_path, request):
  """A finished run whose config.json is gone or unreadable: its checkpoints cannot be
  checked against the config, so a rerun is refused and changes nothing."""
  finished = request.getfixturevalue("freq_quick")[0]
  snapshot = request.getfixturevalue("snapshot")
  workdir = request.getfixturevalue("copy_run")(finished, tmp_path / "wd")
  if case.given == "deleted":
    (workdir / "config.json").unlink()
  elif case.given == "truncated":
    (workdir / "config.json").write_text('{"seed": 0, "task": {"na')
  else:
    (workdir / "config.json").write_text("[1, 2, 3]")
  before = snapshot(workdir)
  result = _run([sys.executable, "-m", "seqjax.main",
                 f"--config={os.path.join(ROOT, 'configs', 'freq.py')}:quick,max_freq=20",
                 f"--workdir={workdir}"])
  _one_error_line(result, 2, case.named)
  assert snapshot(workdir) == before


def _refused_file(case, tmp_path, request):
  """A bad data file is a one-line ConfigError when the task is made from it."""
  write, task = case.given
  task = dict(task)
  path = tmp_path / ("data" + task.pop("suffix", ".csv"))
  if write is not None:
    write(path)
  else:
    path = tmp_path / "missing.csv"
  config = configlib.load("data", task.pop("kind", "classification"))
  config.unlock()
  config.task.train = str(path)
  config.task.update(task)
  # One model, as a run's tests of a file train it.
  config.population.seeds, config.population.select = 1, "all"
  config.population.learning_rates = ()
  with pytest.raises(validate.ConfigError, match=case.named) as info:
    data.make(config.task, config.train.batch_size)
  assert "\n" not in str(info.value)


def _refused_check(case, tmp_path, request):
  with pytest.raises(validate.ConfigError, match=case.named) as info:
    case.given(tmp_path)
  assert "\n" not in str(info.value)


def _refused_call(case, tmp_path, request):
  with pytest.raises(ValueError, match=case.named):
    case.given(_made())


RUNNERS: dict[str, Callable[..., None]] = {
    "config": _refused_config, "command": _refused_command, "workdir": _refused_workdir,
    "file": _refused_file, "check": _refused_check, "library": _refused_call}


@pytest.mark.parametrize("case", [
    pytest.param(c, id=f"{c.channel}: {c.id}", marks=[pytest.mark.slow] if c.slow else [])
    for c in CASES])
def test_a_bad_input_is_one_line_naming_what_is_wrong(case, tmp_path, request):
  RUNNERS[case.channel](case, tmp_path, request)


def test_the_table_holds_every_bad_input():
  """Its size is the count of bad inputs covered: a row lost is caught here."""
  counts = collections.Counter(c.channel for c in CASES)
  minimum = {"config": 84, "command": 23, "workdir": 3, "file": 28, "check": 29,
             "library": 24}
  assert {channel: min(counts[channel], n) for channel, n in minimum.items()} == minimum
  assert set(counts) == set(RUNNERS) and len(CASES) >= 190
  assert len({c.id for c in CASES}) == len(CASES)
