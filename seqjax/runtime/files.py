"""Workdir files through `etils.epath`: local paths and object stores (gs://) alike.

A Cloud TPU pod writes its run to `--workdir=gs://bucket/run`, as big_vision
and the Flax examples do, so every host sees one workdir without a shared
NFS. epath reaches gs:// through fsspec (`pip install gcsfs`); orbax writes
the checkpoints there itself. Every file seqjax reads or writes goes through
this module or epath.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from etils import epath

PathLike = str | epath.PathLike


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path`: a local path, or gs://, s3://, az:// through fsspec."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  """False for an object store (gs://, s3://, ...): no appends, no free-space query."""
  return "://" not in str(p)


def write_text(p: PathLike, text: str) -> None:
  """Writes `text` whole: a local file through a temporary name and a rename, so a
  reader (or a crash) never sees half of it; an object store's write is atomic."""
  target = path(p)
  if not is_local(target):
    target.write_text(text)
    return
  tmp = target.parent / f".{target.name}.tmp"
  tmp.write_text(text)
  tmp.replace(target)


def write_json(p: PathLike, content: Any) -> None:
  """`content` as indented JSON, written whole (`write_text`); a NaN or infinite float is
  written as null (JSON has no such numbers)."""
  write_text(p, json.dumps(_finite(content), indent=2, allow_nan=False))


def _finite(content: Any) -> Any:
  if isinstance(content, float):
    return content if math.isfinite(content) else None
  if isinstance(content, dict):
    return {k: _finite(v) for k, v in content.items()}
  if isinstance(content, (list, tuple)):
    return [_finite(v) for v in content]
  return content


def sha256(p: PathLike) -> str:
  """The SHA-256 of the file at `p`, read a megabyte at a time."""
  digest = hashlib.sha256()
  with path(p).open("rb") as f:
    while chunk := f.read(2**20):
      digest.update(chunk)
  return digest.hexdigest()


def read_json(p: PathLike) -> Any:
  """The JSON content of the file at `p`."""
  return json.loads(path(p).read_text())


def read_json_lines(p: PathLike) -> list[Any]:
  """The records of a JSON-lines file (none if it is missing); a line torn by a crash,
  or otherwise unreadable, is skipped."""
  target = path(p)
  if not target.exists():
    return []
  records = []
  for line in target.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


class LineFile:
  """A text file that grows by whole lines, each `write` on storage when it returns.

  Locally an append-mode file (what a crash leaves is every line written). An
  object store has no append: the file is rewritten whole at each write, with
  the lines that were there when it was opened; a metrics file is small.
  """

  def __init__(self, p: PathLike):
    self._path = path(p)
    if is_local(self._path):
      self._file = self._path.open("a")
      self._lines = None
    else:
      self._file = None
      self._lines = self._path.read_text() if self._path.exists() else ""

  def write(self, line: str) -> None:
    """Adds `line` (ending in a newline) and puts the file on storage."""
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines += line
      self._path.write_text(self._lines)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
