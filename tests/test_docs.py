"""The measured figures live in one table (docs/results.md, written by bench/figures.py);
the README and docs/experiments.md quote it word for word."""

import os

ROOT = os.path.join(os.path.dirname(__file__), "..")
START, END = "<!-- results: start -->", "<!-- results: end -->"


def _quoted(path: str) -> str:
  with open(os.path.join(ROOT, path)) as f:
    text = f.read()
  assert text.count(START) == 1 and text.count(END) == 1, path
  return text.split(START)[1].split(END)[0]


def test_the_readme_and_the_experiments_page_quote_the_measured_table():
  table = _quoted("docs/results.md")
  assert table.count("\n| ") >= 10
  assert _quoted("README.md") == table
  assert _quoted("docs/experiments.md") == table


def test_the_real_data_table_is_rewritten_between_its_markers_only(tmp_path):
  import importlib.util
  spec = importlib.util.spec_from_file_location("real_data",
                                                os.path.join(ROOT, "bench", "real_data.py"))
  real_data = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(real_data)
  page = os.path.join(ROOT, "docs", "real_data.md")
  with open(page) as f:
    text = f.read()
  assert text.count(real_data.START) == 1 and text.count(real_data.END) == 1
  copy = tmp_path / "real_data.md"
  copy.write_text(text)
  real_data.write_table(str(copy), "| new | table |")
  head, rest = text.split(real_data.START)
  assert copy.read_text() == (f"{head}{real_data.START}\n| new | table |\n{real_data.END}"
                              + rest.split(real_data.END)[1])
  real_data.write_table(str(tmp_path / "new.md"), "| a |")  # a page made with its markers
  assert "| a |" in (tmp_path / "new.md").read_text()
  row = real_data.row("X", "classification", {
      # A run from before the test figures were named "test" (read from --out, not retrained).
      "metric": "accuracy", "held_out": {"accuracy": 0.9}, "held_out_std": {"accuracy": 0.01},
      "baselines": {"1nn_dtw": {"accuracy": 0.95}}, "wall_s": 12.0,
      "verdict": {"beat": False, "tie": False, "best_baseline": "1nn_dtw"}}, 3)
  assert row == ("| X | classification, accuracy | 0.900 ± 0.010 (3 seeds) | 1nn_dtw 0.950 | "
                 "**lost** (1nn_dtw) | 12 s |")
  ensemble = real_data.row("X", "classification", {
      "metric": "accuracy", "test": {"accuracy": 0.95},
      "population": {"members": 3, "select": "ensemble"},
      "baselines": {"1nn_dtw": {"accuracy": 0.95}}, "wall_s": 12.0,
      "verdict": {"beat": False, "tie": True, "best_baseline": "1nn_dtw"}}, 3)
  assert ensemble == ("| X | classification, accuracy | 0.950 (ensemble of 3) | "
                      "1nn_dtw 0.950 | tied (1nn_dtw) | 12 s |")
