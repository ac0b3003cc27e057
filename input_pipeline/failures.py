"""What stops the input pipeline, and how one failing sample is kept from stopping it.

Damaged data (a corrupt image, an empty caption) is expected on the web and is counted by
reason (webdataset.SKIP_REASONS). Any other exception while decoding, augmenting or
tokenising one sample is a `transform_error`: the sample is dropped and counted, and the first
traceback of each distinct error (its type and the line that raised it) is logged once per
process. `SampleErrorRate` stops the run when such errors are no longer rare, since a
systematic bug must not silently eat the data.

Every error that ends a run derives from `DataError`, so the trainer and the tools report
them as one line.
"""

import collections
import os
import re
import signal
import traceback

from absl import logging

# The data is unreadable when, with no good sample between them, this many damaged samples
# come in a row, or shards fail to open many times over (see web_pipeline.build).
MAX_CONSECUTIVE_SKIPS = 10_000
# A run stops when more than MAX_ERROR_FRACTION of the last ERROR_WINDOW samples (or of the
# window's worth of samples, before that many were read) failed with a transform_error.
ERROR_WINDOW = 10_000
MAX_ERROR_FRACTION = 0.01

_logged = set()  # the errors this process has logged a traceback for


class DataError(RuntimeError):
  """The input pipeline cannot go on; the message says why and what to do."""


class NothingReadable(DataError):
  """The shards yield no usable sample."""


class TooManySampleErrors(DataError):
  """Decoding, augmenting or tokenising fails for too many samples: a bug, not damage."""


class DataWorkerDied(DataError):
  """A decoding worker process ended without a Python error (killed by a signal or crashed)."""


def error_kind(error: BaseException) -> str:
  """What makes two errors the same: the type and the innermost line that raised it."""
  frames = traceback.extract_tb(error.__traceback__)
  where = f' at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}' if frames else ''
  return f'{type(error).__name__}{where}'


def sample_error(error: Exception, sample: str) -> str:
  """Logs `error`'s traceback the first time its kind is seen in this process (naming
  `sample`) and returns its kind."""
  kind = error_kind(error)
  if kind not in _logged:
    _logged.add(kind)
    logging.warning(
      'dropped sample %s: %s: %s (logged once per process; later ones are counted as '
      'skipped_transform_error)\n%s',
      sample,
      kind,
      error,
      ''.join(traceback.format_exception(error)).rstrip(),
    )
  return kind


class SampleErrorRate:
  """The transform errors among the last `window` samples; `add` raises TooManySampleErrors
  when there are more than `max_fraction * window` of them."""

  def __init__(self, window: int = ERROR_WINDOW, max_fraction: float = MAX_ERROR_FRACTION):
    self.window = window
    self.max_errors = int(max_fraction * window)
    self._seen = 0
    self._errors = collections.deque()  # (sample number, kind), oldest first

  def add(self, kind: str | None) -> None:
    """Counts one sample; `kind` is its error's kind, or None for a sample without error."""
    self._seen += 1
    if kind is not None:
      self._errors.append((self._seen, kind))
    while self._errors and self._errors[0][0] <= self._seen - self.window:
      self._errors.popleft()
    if len(self._errors) > self.max_errors:
      kinds = collections.Counter(k for _, k in self._errors)
      worst, count = kinds.most_common(1)[0]
      raise TooManySampleErrors(
        f'{len(self._errors)} of the last {min(self._seen, self.window)} samples failed in '
        f'decoding, augmentation or tokenisation, {count} of them with {worst} (its traceback '
        'is logged above): that is a bug or a systematic data problem, not web damage, so the '
        'run stops rather than drop the data'
      )


def worker_death(error: Exception) -> DataWorkerDied | None:
  """grain's error for a worker process that ended without a Python exception, as a
  DataWorkerDied with advice; None for any other error."""
  found = re.search(r'[Ww]orker process was terminated .*exit code (-?\d+)', str(error))
  if found is None:
    return None
  code = int(found.group(1))
  how = f'exit code {code}'
  if code < 0:
    try:
      how = f'killed by {signal.Signals(-code).name}'
    except ValueError:
      how = f'killed by signal {-code}'
    if code == -signal.SIGKILL:
      how += ', which is usually the out-of-memory killer'
  return DataWorkerDied(
    f'a data worker process died ({how}). Lower config.data.workers or '
    'config.data.shuffle_buffer if memory is short, then rerun the same command: training '
    'resumes from the last checkpoint'
  )
