"""Where training and evaluation metrics go: WORKDIR/metrics.jsonl and TensorBoard events.

metrics.jsonl has one JSON object per write: {"step": ..., "loss": ..., ...}. It is what
scripts and tests read; TensorBoard event files under WORKDIR/tensorboard are for people.

Both are written through groupvit_jax.filesystem, so a gs:// workdir works like a local one.
An object store cannot append, so each writer keeps the bytes of its file and writes the file
whole at every flush: metrics.jsonl stays one file (a few MB for a long run); event files roll
over to a new file past EVENT_FILE_BYTES, which bounds what one flush writes. The writers run
in a background thread (CLU's AsyncWriter), so uploads never hold up the train loop.
"""

import io
import json
import math
import os
import socket
import time
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from PIL import Image

from groupvit_jax import filesystem

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
EVENT_FILE_BYTES = 4 << 20


class _DropsOtherSummaries(metric_writers.MetricWriter):
  """A MetricWriter whose summaries other than those a subclass writes are dropped."""

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass


class JsonlWriter(_DropsOtherSummaries):
  """Appends scalars as JSON lines to `path` (local or a URL), written whole at each write.

  With `resume_step`, lines of steps after it (logged by a run that stopped before its next
  checkpoint, and about to be logged again) are dropped first, so the file reads as one run.
  """

  def __init__(self, path: str, resume_step: int | None = None):
    self.path = path
    self._text = ''
    if filesystem.exists(path):
      lines = filesystem.read_text(path).splitlines(keepends=True)
      if resume_step is not None:
        lines = [line for line in lines if line.strip() and json.loads(line)['step'] <= resume_step]
      self._text = ''.join(lines)
      filesystem.write_text(path, self._text)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step), **{k: _number(v) for k, v in scalars.items()}}
    self._text += json.dumps(row) + '\n'
    filesystem.write_text(self.path, self._text)

  def flush(self):
    pass

  def close(self):
    pass


class EventFileWriter(_DropsOtherSummaries):
  """Scalars and images as TensorBoard event files in `directory` (local or a URL), written
  with TensorBoard's record format; no TensorFlow file system involved."""

  def __init__(self, directory: str):
    # TensorBoard's protobufs and record framing, loaded with the writer (not TensorFlow).
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top

    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self._record_writer = record_writer
    self.directory = directory
    self._path = None
    self._buffer = None
    self._records = None
    self._dirty = False

  def _start_file(self) -> None:
    """A new event file, opened (as TensorBoard expects) by a file_version event."""
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
    self._path = filesystem.join(self.directory, name)
    self._buffer = io.BytesIO()
    self._records = self._record_writer.RecordWriter(self._buffer)
    self._write_event(self._event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write_event(self, event) -> None:
    self._records.write(event.SerializeToString())
    self._dirty = True

  def _write_summary(self, step: int, values: list) -> None:
    """One event of summary `values` at `step`, written out at once."""
    if self._path is None or self._buffer.tell() > EVENT_FILE_BYTES:
      self.flush()
      self._start_file()
    event = self._event_pb2.Event(
      wall_time=time.time(), step=int(step), summary=self._summary_pb2.Summary(value=values)
    )
    self._write_event(event)
    self.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    Value = self._summary_pb2.Summary.Value
    self._write_summary(
      step, [Value(tag=k, simple_value=float(np.asarray(v))) for k, v in scalars.items()]
    )

  def write_images(self, step: int, images: Mapping[str, Any]):
    """images: tag -> uint8 [N, H, W, C] (C = 1, 3 or 4), as CLU's writers take them; each
    image a PNG in the event, tagged `tag` (N = 1) or `tag/i`."""
    summary = self._summary_pb2.Summary
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch, np.uint8)
      if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
        raise ValueError(f'image {tag!r}: expected [N, H, W, C], C 1, 3 or 4; got {batch.shape}')
      for i, image in enumerate(batch):
        png = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(png, format='PNG')
        height, width, channels = image.shape
        encoded = summary.Image(
          height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue()
        )
        values.append(summary.Value(tag=tag if len(batch) == 1 else f'{tag}/{i}', image=encoded))
    if values:
      self._write_summary(step, values)

  def flush(self):
    if self._dirty:
      filesystem.write_bytes(self._path, self._buffer.getvalue())
      self._dirty = False

  def close(self):
    self.flush()


def _number(value: Any) -> float | int | None:
  """A JSON-safe Python number (NaN and infinities, which JSON lacks, become None)."""
  value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def create_writer(workdir: str, resume_step: int | None = None) -> metric_writers.MetricWriter:
  """TensorBoard events and metrics.jsonl, written in a background thread, on the first
  process (others get a writer that drops everything). `flush()` waits for pending writes.

  Progress goes to the log as one line per logged step (`progress.progress_line`), so CLU's logging
  writer, which would repeat every scalar there, is not used.
  """
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(
    metric_writers.MultiWriter(
      [
        EventFileWriter(filesystem.join(workdir, TENSORBOARD_DIR)),
        JsonlWriter(filesystem.join(workdir, METRICS_FILE), resume_step),
      ]
    )
  )
