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
