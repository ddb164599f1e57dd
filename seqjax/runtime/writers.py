"""Metric writers: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow), stdout.

Both files go through `seqjax.runtime.files` (etils.epath), so a workdir on gs:// works.
"""

from __future__ import annotations

import io
import json
import sys
import time
import uuid

import jax

from seqjax.runtime import files, sharding


def _tensorboard():
  """tensorboardX's event-file modules, imported without torch where torch is not loaded yet.

  tensorboardX imports torch when it is installed (to accept torch tensors,
  which seqjax never passes), a noticeable part of a run's start-up on a CPU.
  `sys.modules["torch"] = None` makes that optional import fail fast.

  Returns (EventsWriter, event_pb2, summary_pb2). seqjax writes events itself,
  synchronously: tensorboardX's SummaryWriter queues them for a worker thread,
  so the events of a run killed with -9 could be lost although they were flushed.
  """
  hide_torch = "torch" not in sys.modules and "tensorboardX" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None
  try:
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto import event_pb2, summary_pb2
  finally:
    if hide_torch:
      del sys.modules["torch"]
  _register_object_store_events()
  return EventsWriter, event_pb2, summary_pb2


class _ObjectStoreEvents:
  """An event file on an object store (no appends): kept whole, rewritten at each flush."""

  def __init__(self, path: str):
    self._path, self._buffer = files.path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    with self._path.open("wb") as f:
      f.write(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _ObjectStoreEventsFactory:
  def open(self, path: str) -> _ObjectStoreEvents:
    return _ObjectStoreEvents(path)

  def directory_check(self, path: str) -> None:
    files.path(path).mkdir(parents=True, exist_ok=True)


def _register_object_store_events() -> None:
  """tensorboardX writes event files to gs://, s3:// and az:// through epath.

  Its own gs:// and s3:// writers need google-cloud-storage or boto3; epath
  needs fsspec with gcsfs (s3fs, adlfs), as orbax does.
  """
  from tensorboardX import record_writer
  for prefix in ("gs", "s3", "az"):
    record_writer.register_writer_factory(prefix, _ObjectStoreEventsFactory())


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard event files.

  Appends, so a resumed run keeps the lines written before it stopped.
  `enabled=False` (every process of a multi-host job but the first) writes nothing.
  """

  def __init__(self, workdir: files.PathLike, enabled: bool = True, resumed_at: int = 0):
    """`resumed_at`: the checkpoint step a resumed run starts from; TensorBoard then
    drops the events a previous run wrote after it (its purge step)."""
    self._enabled = enabled
    if enabled:
      self._path = files.path(workdir) / "metrics.jsonl"
      self._jsonl = files.LineFile(self._path)
      events_writer, self._event_pb2, self._summary_pb2 = _tensorboard()
      folder = files.path(workdir) / "tensorboard"
      folder.mkdir(parents=True, exist_ok=True)
      # Event files are named by the second they were opened in; a suffix of its own keeps a
      # writer opened in the same second (a quick resume) from replacing the last one's file.
      self._tb = events_writer(str(folder / "events"), f".{uuid.uuid4().hex[:8]}")
      if resumed_at:  # TensorBoard drops the events of steps after the checkpoint
        self._tb.write_event(self._event_pb2.Event(
            wall_time=time.time(), step=resumed_at + 1,
            session_log=self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)))
        self._tb.flush()

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    if files.is_local(self._path) and not self._path.exists():
      console(f"warning: {self._path} was deleted while the run wrote it; recreated "
              "(the lines written before are lost)")
      self._jsonl.close()
      self._jsonl = files.LineFile(self._path)
    record = {"step": step, "split": split, "time": time.time(), **scalars}
    self._jsonl.write(json.dumps(record) + "\n")
    values = [self._summary_pb2.Summary.Value(tag=f"{split}/{name}", simple_value=float(value))
              for name, value in scalars.items()]
    self._tb.write_event(self._event_pb2.Event(
        wall_time=record["time"], step=step, summary=self._summary_pb2.Summary(value=values)))
    self._tb.flush()

  def close(self) -> None:
    if not self._enabled:
      return
    self._jsonl.close()
    self._tb.close()


def console(message: str) -> None:
  """A line for the person running the experiment (stdout, unbuffered; process 0 only)."""
  if jax.process_index() == 0:
    print(message, flush=True)


class Progress:
  """Stdout progress lines with steps/s and ETA, measured since the first step; with
  `steps_per_epoch`, led by the epoch as Keras' `fit` shows it (`epoch 3/100`)."""

  def __init__(self, first_step: int, total_steps: int, steps_per_epoch: int = 0):
    self._total = total_steps
    self._t0 = None
    self._s0 = first_step
    self._per_epoch = steps_per_epoch

  def start(self, step: int) -> None:
    """Call after the first (compiling) step so rates exclude compilation."""
    self._t0, self._s0 = time.perf_counter(), step

  def report(self, step: int, scalars: dict[str, float], extra: str = "") -> None:
    """One line: where training is, `scalars`, then `extra` (e.g. the validation so far)."""
    where = f"step {step}/{self._total}"
    if self._per_epoch:
      epochs = -(-self._total // self._per_epoch)
      where = f"epoch {-(-step // self._per_epoch)}/{epochs} ({where})"
    text = " ".join([where, *(f"{k}={v:.4g}" for k, v in scalars.items())])
    if extra:
      text += f" | {extra}"
    if self._t0 is None or step <= self._s0:
      console(text)
      return
    rate = (step - self._s0) / (time.perf_counter() - self._t0)
    console(f"{text} | {rate:.1f} steps/s, ETA {duration((self._total - step) / rate)}")


def duration(seconds: float) -> str:
  """`HH:MM:SS`, with days in front past a day (`3d 12:36:02`)."""
  if not seconds < 1e9:  # ~30 years, or not a number
    return "more than 30 years"
  days, rest = divmod(int(seconds), 86400)
  clock = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
  return f"{days}d {clock}" if days else clock


def read_metrics(workdir: files.PathLike) -> list[dict]:
  """The records of `workdir/metrics.jsonl`, in step order.

  A resumed run recomputes the steps after its checkpoint; their newest
  record (split, step) wins, so a resumed history reads as one run.
  """
  latest = {}
  for record in _records(files.path(workdir) / "metrics.jsonl"):
    latest[(record["split"], record["step"])] = record
  return sorted(latest.values(), key=lambda r: (r["step"], r["split"]))


def _records(path) -> list[dict]:
  """The whole records of a metrics file; a line torn by a crash is skipped."""
  records = [r for r in files.read_json_lines(path)
             if isinstance(r, dict) and "step" in r and "split" in r]
  for r in records:  # older runs named the validation split "eval"
    if r["split"] == "eval":
      r["split"] = "validation"
  return records


def repair_metrics(workdir: files.PathLike, step: int) -> None:
  """Before a run (re)starts at checkpoint `step`: `metrics.jsonl` keeps only the whole
  records up to `step`; a torn last line and what a previous run logged after its
  last checkpoint go, since the run computes those steps again (writer process only)."""
  path = files.path(workdir) / "metrics.jsonl"
  if not sharding.is_writer() or not path.exists():
    return
  text = path.read_text()
  kept = [r for r in _records(path) if r["step"] <= step]
  new = "".join(json.dumps(r) + "\n" for r in kept)
  if new != text:
    files.write_text(path, new)

