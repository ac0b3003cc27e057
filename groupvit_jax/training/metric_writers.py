"""Where training and evaluation metrics go: TensorBoard (CLU) and WORKDIR/metrics.jsonl.

metrics.jsonl has one JSON object per write: {"step": ..., "loss": ..., ...}. It is what
scripts and tests read; TensorBoard event files under WORKDIR/tensorboard are for people.
"""

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


class JsonlWriter(metric_writers.MetricWriter):
  """Appends scalars as JSON lines. Other summaries (images, texts...) are not kept here.

  With `resume_step`, lines of steps after it (logged by a run that stopped before its next
  checkpoint, and about to be logged again) are dropped first, so the file reads as one run.
  """

  def __init__(self, path: str, resume_step: int | None = None):
    self.path = path
    if resume_step is not None and os.path.exists(path):
      with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)['step'] <= resume_step]
      with open(path + '.tmp', 'w') as f:
        f.writelines(lines)
      os.replace(path + '.tmp', path)
    self._file = open(path, 'a')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step), **{k: _number(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()

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

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def _number(value: Any) -> float | int | None:
  """A JSON-safe Python number (NaN and infinities, which JSON lacks, become None)."""
  value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def create_writer(workdir: str, resume_step: int | None = None) -> metric_writers.MetricWriter:
  """TensorBoard (written in a background thread) and metrics.jsonl, on the first process.

  Progress goes to the log as one line per logged step (`progress.progress_line`), so CLU's logging
  writer, which would repeat every scalar there, is not used.
  """
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter(
    [
      metric_writers.AsyncWriter(
        metric_writers.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
      ),
      JsonlWriter(os.path.join(workdir, METRICS_FILE), resume_step),
    ]
  )
