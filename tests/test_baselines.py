"""The field's baselines beside a file-backed run, the verdict, and `.ts` files."""

from fractions import Fraction

import numpy as np
import pytest

import seqjax
from seqjax.config import configlib
from seqjax.data import baselines, readers
from seqjax.data.tasks import data
from seqjax.train import trainer


def _in_band(i, j, la, lb, band):
  """Whether cell (i, j) lies within `band` steps of the shorter series of the straight
  line from the first steps to the last, in exact fractions of each series' time."""
  shorter = min(la, lb) - 1
  if shorter == 0:
    return True
  return abs(Fraction(i, la - 1) - Fraction(j, lb - 1)) * shorter <= band


def _dtw_reference(a, b, band):
  """Textbook DTW by the full table (squared distances), inside the band (`_in_band`)."""
  la, lb = len(a), len(b)
  in_band = lambda i, j: _in_band(i, j, la, lb, band)  # noqa: E731

  table = np.full((la + 1, lb + 1), np.inf)
  table[0, 0] = 0.0
  for i in range(1, la + 1):
    for j in range(1, lb + 1):
      if in_band(i - 1, j - 1):
        table[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + min(
            table[i - 1, j - 1], table[i - 1, j], table[i, j - 1])
  return table[la, lb]


def test_dtw_equals_the_full_table_for_variable_lengths_and_features(monkeypatch):
  rng = np.random.default_rng(0)
  xa, xb = rng.normal(size=(5, 30, 2)), rng.normal(size=(4, 26, 2))
  la, lb = rng.integers(8, 31, 5), rng.integers(8, 27, 4)
  # NaN past each end, as files pad them: the distance never reads it.
  xa[np.arange(30)[None, :] >= la[:, None]] = np.nan
  xb[np.arange(26)[None, :] >= lb[:, None]] = np.nan
  za, zb = baselines.z_normalise(xa, la), baselines.z_normalise(xb, lb)
  monkeypatch.setattr(baselines, "PAIR_BLOCK", 7)  # blocks, and a padded last one
  got = baselines.distances((za, la), (zb, lb), "dtw")
  want = np.array([[_dtw_reference(za[i, :la[i]].astype(np.float64),
                                   zb[j, :lb[j]].astype(np.float64),
                                   max(1, round(baselines.DTW_WINDOW * min(la[i], lb[j]))))
                    for j in range(4)] for i in range(5)])
  # float32 sums of ~60 squared differences of z-normalised values.
  np.testing.assert_allclose(got, want, rtol=64 * np.finfo(np.float32).eps)


def test_dtw_band_of_very_unequal_lengths_and_single_steps():
  """Lengths 1 to 40 against each other: the band slants from first steps to last, and
  a pair with a single step in either series still has its one path."""
  rng = np.random.default_rng(5)
  la, lb = np.array([1, 2, 5, 40, 40]), np.array([1, 3, 40, 7, 39])
  xa, xb = rng.normal(size=(5, 40, 1)), rng.normal(size=(5, 40, 1))
  got = baselines.distances((xa.astype(np.float32), la), (xb.astype(np.float32), lb), "dtw")
  for i in range(5):
    for j in range(5):
      band = max(1, round(baselines.DTW_WINDOW * min(la[i], lb[j])))
      want = _dtw_reference(xa[i, :la[i]].astype(np.float32).astype(np.float64),
                            xb[j, :lb[j]].astype(np.float32).astype(np.float64), band)
      np.testing.assert_allclose(got[i, j], want, rtol=128 * np.finfo(np.float32).eps)


def _keogh_reference(a, b):
  """LB_Keogh of series a [n, F] against b [m, F]: each step of a's squared distance to
  the envelope of b's steps in its row of the band, summed."""
  n, m = len(a), len(b)
  band = max(1, round(baselines.DTW_WINDOW * min(n, m)))
  total = 0.0
  for i in range(n):
    cols = [j for j in range(m) if _in_band(i, j, n, m, band)]
    hi, lo = b[cols].max(0), b[cols].min(0)
    total += ((np.maximum(a[i] - hi, 0) + np.maximum(lo - a[i], 0)) ** 2).sum()
  return total


def test_lower_bounds_over_several_blocks_of_steps_equal_the_band_envelopes():
  """A series' bound is summed `STEP_BLOCK` steps at a time, as many blocks as its
  length needs: lengths from 1 to over 3 blocks, against the envelopes by brute force."""
  rng = np.random.default_rng(7)
  block = baselines.STEP_BLOCK
  la, lb = np.array([1, block, block + 1, 3 * block + 5]), np.array([3, 2 * block + 9, 40])
  z = lambda n, lengths: baselines.z_normalise(  # noqa: E731
      rng.normal(size=(n, lengths.max(), 2)).cumsum(1), lengths)
  xa, xb = z(4, la), z(3, lb)
  got = baselines.dtw_lower_bounds((xa, la), (xb, lb))
  want = np.array([[max(_keogh_reference(xa[i, :la[i]].astype(np.float64), xb[j, :lb[j]]),
                        _keogh_reference(xb[j, :lb[j]].astype(np.float64), xa[i, :la[i]]))
                    for j in range(3)] for i in range(4)])
  # float32 sums of up to ~400 squared gaps of z-normalised values, by different orders.
  np.testing.assert_allclose(got, want, rtol=256 * np.finfo(np.float32).eps, atol=1e-5)
  assert (want > 0).sum() >= 8  # the bounds are not trivially zero


def test_dtw_of_series_past_max_steps_is_skipped(monkeypatch):
  monkeypatch.setattr(baselines, "MAX_STEPS", 20)
  rng = np.random.default_rng(6)
  test, train = _random_walks(rng, 3, 21, 1, 21), _random_walks(rng, 4, 10, 1, 5)
  monkeypatch.setattr(baselines, "_dtw", None)  # any DTW computed would fail
  got = baselines.nearest(test, train, "dtw")
  assert isinstance(got, baselines.Skipped)
  assert got.reason == "series of up to 21 steps, over the 20 that the DTW baseline computes"


def _random_walks(rng, n, steps, features, shortest):
  """z-normalised random walks [n, steps, features] of random lengths, and the lengths."""
  x = rng.normal(size=(n, steps, features)).cumsum(1)
  lengths = rng.integers(shortest, steps + 1, n)
  return baselines.z_normalise(x, lengths), lengths


@pytest.mark.parametrize("seed", [0, 1, pytest.param(2, marks=pytest.mark.slow)])
def test_pruned_dtw_finds_the_nearest_of_the_full_matrix(seed, monkeypatch):
  """The lower bounds never exceed the distances, and pruning by them changes no
  nearest neighbour, ties included (the first of tied ones), for lengths from a
  quarter to all of the longest series."""
  rng = np.random.default_rng(seed)
  monkeypatch.setattr(baselines, "PAIR_BLOCK", 16)  # many blocks, shapes and paddings
  test, train = _random_walks(rng, 30, 60, 2, 15), _random_walks(rng, 41, 48, 2, 12)
  # Exact duplicates at later indices: their distance ties with the original's.
  train = tuple(np.concatenate([v, v[:5]]) for v in train)
  full = baselines.distances(test, train, "dtw")
  bound = baselines.dtw_lower_bounds(test, train)
  # float32 sums of up to ~100 squared differences, by different orders.
  assert (bound <= full * (1 + 256 * np.finfo(np.float32).eps)).all()
  assert (bound > 0).mean() > 0.5  # the bounds are not trivially zero
  np.testing.assert_array_equal(baselines.nearest(test, train, "dtw"), full.argmin(1))


def test_lower_bounds_computed_a_chunk_of_series_at_a_time_are_the_same(monkeypatch):
  """Many series' windowed maxima would not fit in memory at once: the bounds from
  chunks of 7 series (the last padded to 7) equal those of one chunk of all."""
  rng = np.random.default_rng(4)
  test, train = _random_walks(rng, 9, 40, 2, 10), _random_walks(rng, 23, 50, 2, 12)
  whole = baselines.dtw_lower_bounds(test, train)
  levels = 6  # 2 ** 5 <= 50 steps < 2 ** 6
  monkeypatch.setattr(baselines, "TABLE_FLOATS", 7 * levels * 50 * 2)
  np.testing.assert_array_equal(baselines.dtw_lower_bounds(test, train), whole)
  none = (train[0][:0], train[1][:0])
  assert baselines.dtw_lower_bounds(test, none).shape == (9, 0)


def test_dtw_over_the_budget_is_skipped_before_it_is_computed(monkeypatch):
  rng = np.random.default_rng(3)
  test, train = _random_walks(rng, 6, 40, 1, 30), _random_walks(rng, 8, 40, 1, 30)
  monkeypatch.setattr(baselines, "_dtw", None)  # any DTW computed would fail
  got = baselines.nearest(test, train, "dtw", budget=100.0)
  assert isinstance(got, baselines.Skipped)
  assert "6 test x 8 training series of up to" in got.reason
  assert got.reason.endswith("over the budget of 1e+02")


def test_dtw_cells_past_int32_are_counted_not_wrapped(monkeypatch):
  """Lengths come as int32; the budget's count of cells (here about 2.5e9 in the first
  round's 2700 pairs) must not wrap around past 2 ** 31 to a count under the budget."""
  test = (np.zeros((2700, 2000, 1), np.float32), np.full(2700, 2000, np.int32))
  train = (np.zeros((1, 2000, 1), np.float32), np.full(1, 2000, np.int32))
  monkeypatch.setattr(baselines, "_dtw", None)  # any DTW computed would fail
  monkeypatch.setattr(baselines, "dtw_lower_bounds", lambda a, b: np.zeros((2700, 1)))
  got = baselines.nearest(test, train, "dtw", budget=1e9)
  assert isinstance(got, baselines.Skipped) and "needs 2.5e+09 cells" in got.reason


def test_dtw_finds_a_shifted_pattern_that_euclid_misses():
  t = np.arange(60)
  bump = lambda at: np.exp(-0.5 * ((t - at) / 2.0) ** 2)[:, None]  # noqa: E731
  train = np.stack([bump(20), -bump(20)])  # class 0 a bump, class 1 a dip
  test = np.stack([bump(24), -bump(24)])  # the same, 4 steps later
  lengths = np.full(2, 60)
  z = lambda x: (baselines.z_normalise(x, lengths), lengths)  # noqa: E731
  labels = np.array([0, 1])
  for distance in ("euclidean", "dtw"):
    scores = baselines.nearest_neighbour(z(test), z(train), labels, 2, distance)
    assert scores.shape == (2, 2) and np.argmax(scores, 1).tolist() == [0, 1]
  # Against the other class's pattern, DTW aligns nothing better: its distances order as
  # Euclid's, and the shifted twin is much closer than under Euclid.
  dtw = baselines.distances(z(test), z(train), "dtw")
  euclid = baselines.distances(z(test), z(train), "euclidean")
  assert dtw[0, 0] < 0.2 * euclid[0, 0]


def test_ridge_recovers_a_linear_map_and_drift_a_line():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(12, 2))
  x = rng.normal(size=(80, 12))
  y = x @ w + 3.0
  pred, penalty = baselines.ridge(x[:50], y[:50], x[50:60], y[50:60], x[60:])
  assert penalty == min(baselines.RIDGE_PENALTIES)
  np.testing.assert_allclose(pred, y[60:], atol=0.05)
  windows = (2.0 + 0.5 * np.arange(10.0))[None, :, None]  # a line: drift continues it
  np.testing.assert_allclose(baselines.drift(windows, 3)[0, :, 0], 2.0 + 0.5 * np.arange(10, 13))


@pytest.mark.parametrize("higher,model,beat", [(True, 0.9, True), (True, 0.7, False),
                                               (False, 0.5, True), (False, 2.0, False),
                                               (False, None, False)])
def test_the_verdict_compares_with_the_best_baseline(higher, model, beat):
  metric = "accuracy" if higher else "mae"
  scores = {"a": {metric: 0.8 if higher else 1.0}, "b": {metric: 0.6 if higher else 1.5},
            "nan": {metric: float("nan")}}
  v = baselines.verdict(metric, higher, model, scores)
  assert v["best_baseline"] == "a" and v["beat"] is beat
  line = baselines.verdict_line(v, metric)
  assert ("did NOT beat" in line) is (not beat) and "a " + metric in line
  assert baselines.verdict(metric, higher, model, {}) is None
  # The same figure, rounded differently (a mean of float32 values), is a tie, not a win.
  same = np.float32(scores["a"][metric]) * (1 + 2 * np.finfo(np.float32).eps)
  tie = baselines.verdict(metric, higher, float(same), scores)
  assert tie["tie"] and not tie["beat"] and "tied with the best" in baselines.verdict_line(
      tie, metric)


TS = """# a comment
% another
@problemName Tiny
@timeStamps false
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
{cases}
"""


def _ts_cases(n, rng):
  lines, labels = [], []
  for i in range(n):
    label = "up" if i % 2 else "down"
    length = int(rng.integers(16, 25))
    ramp = np.linspace(0, 1, length) * (1 if label == "up" else -1)
    dims = [ramp + 0.1 * rng.normal(size=length), 0.1 * rng.normal(size=length)]
    lines.append(":".join(",".join(f"{v:.4f}" for v in d) for d in dims) + f":{label}")
    labels.append(label)
  return "\n".join(lines), labels


def test_a_ts_file_reads_dimensions_lengths_missing_values_and_names(tmp_path):
  cases, labels = _ts_cases(6, np.random.default_rng(0))
  head, rest = cases.split("\n", 1)
  *dims, label = head.split(":")  # a trailing missing step pads the first case
  cases = ":".join(d + ",?" for d in dims) + f":{label}\n{rest}"
  path = tmp_path / "tiny.ts"
  path.write_text(TS.format(cases=cases))
  arrays = readers.read(str(path), "task.train")
  assert arrays.x.shape[0] == 6 and arrays.x.shape[2] == 2
  assert arrays.y.tolist() == labels
  first = cases.split("\n")[0].split(":")[0].split(",")
  assert arrays.lengths[0] == len(first) - 1 and arrays.x.shape[1] >= len(first)
  np.testing.assert_allclose(arrays.x[0, :arrays.lengths[0], 0], [float(v) for v in first[:-1]])
  regression = "@targetLabel true\n@data\n1,2,3:0.5\n4,5,6:-1.25\n"
  (tmp_path / "r.ts").write_text(regression)
  assert readers.read(str(tmp_path / "r.ts"), "task.train").y.tolist() == [0.5, -1.25]
  (tmp_path / "n.ts").write_text("@classLabel true 1 2\n@data\n1,2:1\n2,3:2\n")
  assert readers.read(str(tmp_path / "n.ts"), "task.train").y.dtype.kind == "i"


@pytest.mark.slow
def test_a_ts_run_with_class_names_reports_the_baselines_and_its_verdict(tmp_path, capsys):
  rng = np.random.default_rng(0)
  for split, n in (("TRAIN", 60), ("TEST", 20)):
    (tmp_path / f"T_{split}.ts").write_text(TS.format(cases=_ts_cases(n, rng)[0]))
  config = configlib.load("data", "quick")
  config.unlock()
  config.task.train, config.task.test = str(tmp_path / "T_TRAIN.ts"), str(tmp_path / "T_TEST.ts")
  config.train.epochs = 20
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(results["baselines"]) == {"majority_class", "1nn_euclidean", "1nn_dtw"}
  assert results["baselines"]["1nn_dtw"]["accuracy"] == 1.0  # a ramp up or down
  v = results["verdict"]
  assert v["best_baseline"] in ("1nn_euclidean", "1nn_dtw") and v["baseline"] == 1.0
  # Nothing beats 1.0: the verdict says the model tied or lost, and the console warns.
  assert v["beat"] is False and v["tie"] is (v["model"] == 1.0)
  said = "tied with" if v["tie"] else "did NOT beat"
  assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith(
      f"warning: verdict: the model {said} the best baseline")
  run = seqjax.load(tmp_path / "run")
  x, y, lengths = run.test_split()
  assert set(run.predict(x, lengths).tolist()) <= {"up", "down"} and set(y.tolist()) == {
      "up", "down"}


@pytest.mark.slow
def test_a_baseline_over_the_budget_is_named_as_not_computed(tmp_path, capsys, monkeypatch):
  """1-NN DTW skipped for its size: results.json, the verdict and its line say so, and
  the verdict is against the baselines computed."""
  rng = np.random.default_rng(0)
  for split, n in (("TRAIN", 40), ("TEST", 10)):
    (tmp_path / f"T_{split}.ts").write_text(TS.format(cases=_ts_cases(n, rng)[0]))
  # 10 test x 40 training series x 24 steps: Euclidean's cells fit, DTW's (x 24) do not.
  monkeypatch.setattr(baselines, "NN_BUDGET", 2e4)
  config = configlib.load("data", "quick")
  config.unlock()
  config.task.train, config.task.test = str(tmp_path / "T_TRAIN.ts"), str(tmp_path / "T_TEST.ts")
  config.train.epochs, config.population.seeds = 1, 1
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(results["baselines"]) == {"majority_class", "1nn_euclidean"}
  assert "over the budget of 2e+04" in results["baselines_not_computed"]["1nn_dtw"]
  assert results["verdict"]["not_computed"] == ["1nn_dtw"]
  last = capsys.readouterr().out.rstrip().splitlines()[-1]
  assert last.endswith("; not computed: 1nn_dtw (over the size budget)")
  from seqjax import report
  assert "1nn_dtw not computed" in report.rows(str(tmp_path))[2]


def test_regression_baselines_include_ridge_chosen_on_validation(tmp_path):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(200, 10)).astype(np.float32)
  y = x @ rng.normal(size=(10,)).astype(np.float32)
  np.savez(tmp_path / "r.npz", x=x, y=y)
  config = configlib.load("data", "regression")
  config.unlock()
  config.task.train = str(tmp_path / "r.npz")
  task = data.make(config.task, config.train.batch_size)
  preds = task.baselines()
  assert set(preds) == {"train_mean", "ridge"}
  shift, scale = task.info["y_shift"][0], task.info["y_scale"][0]
  truth = task.test.arrays["y"][:, 0]
  assert np.abs(preds["ridge"][:, 0] * scale + shift - truth).mean() < 0.05 * np.abs(truth).mean()
