"""One failing sample never stops a run; a systematic failure or a dead worker always does."""

import logging

import numpy as np
import pytest

from input_pipeline import failures, image_transforms, web_pipeline
from tests import shard_fixtures as fx

# Crop and flip only, so that each sample's colour names it.
CONFIG = web_pipeline.PipelineConfig(
  transform=image_transforms.TransformConfig(image_size=32, randaugment=False, random_erasing=0),
  context_length=16,
  shuffle_buffer=1,
)


def _epoch(paths, config=CONFIG, batch_size=8):
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths, batch_size, 0, config, num_epochs=1)
  )
  try:
    numbers = [fx.number_of(image) for batch in iterator for image in batch['image']]
  finally:
    iterator.close()
  return numbers, iterator.counters()


def _failing_transform(monkeypatch, fail):
  """Makes train_transform raise `fail(n)` for the sample numbered n (None: no error)."""
  original = image_transforms.train_transform

  def transform(data, rng, config):
    error = fail(fx.number_of(np.asarray(image_transforms.decode(data))))
    if error is not None:
      raise error
    return original(data, rng, config)

  monkeypatch.setattr(image_transforms, 'train_transform', transform)


def test_failing_samples_are_dropped_counted_and_logged_once_per_kind(
  tmp_path, monkeypatch, caplog
):
  paths = fx.write_good_shards(str(tmp_path), 4, 50)  # samples 0..199

  def fail(n):
    if n % 10 == 3:
      return ValueError(f'odd value in sample {n}')
    if n % 25 == 7:
      return KeyError(n)
    return None

  _failing_transform(monkeypatch, fail)
  with caplog.at_level(logging.WARNING):
    numbers, counters = _epoch(paths)
  failed = {n for n in range(200) if fail(n) is not None}
  assert sorted(numbers) == sorted(set(range(200)) - failed)
  assert counters['skipped_transform_error'] == len(failed) == 28
  assert counters['skipped'] == len(failed)
  logged = [r.getMessage() for r in caplog.records if 'dropped sample' in r.getMessage()]
  # Two kinds of error (type and raising line), each logged once with its traceback.
  assert len(logged) == 2, logged
  assert sum('ValueError at test_sample_failures.py' in m for m in logged) == 1
  assert sum('KeyError at test_sample_failures.py' in m for m in logged) == 1
  assert all('Traceback (most recent call last)' in m for m in logged)


def test_a_systematic_error_stops_the_run_naming_it(tmp_path, monkeypatch):
  paths = fx.write_good_shards(str(tmp_path), 3, 100)  # 150 fail
  _failing_transform(monkeypatch, lambda n: ZeroDivisionError('a bug') if n % 2 else None)
  with pytest.raises(failures.TooManySampleErrors, match=r'101 of the last \d+ samples') as err:
    _epoch(paths)
  assert 'ZeroDivisionError at test_sample_failures.py' in str(err.value)


def test_error_rate_window_by_hand():
  # At most 1% of a 1,000-sample window, 10 errors, may fail.
  rate = failures.SampleErrorRate(window=1000, max_fraction=0.01)
  for _ in range(10):
    rate.add('A')
  for _ in range(990):
    rate.add(None)
  # Samples 1001..1010 fail: each pushes one of samples 1..10 out of the window.
  for _ in range(10):
    rate.add('B')
  # Sample 1011: the window (samples 12..1011) holds 11 errors, all of kind B.
  with pytest.raises(failures.TooManySampleErrors, match='11 of the last 1000 samples .*11 of'):
    rate.add('B')
  # Before a window's worth of samples, the same count applies.
  early = failures.SampleErrorRate(window=1000, max_fraction=0.01)
  for _ in range(10):
    early.add('C')
  with pytest.raises(failures.TooManySampleErrors, match='11 of the last 11 samples'):
    early.add('C')


def test_worker_errors_reach_the_trainer_with_their_type(tmp_path):
  # Every sample fails in the worker processes (an impossible output size of 0 pixels).
  paths = fx.write_good_shards(str(tmp_path), 4, 60)
  config = web_pipeline.PipelineConfig(
    transform=image_transforms.TransformConfig(image_size=0),
    context_length=16,
    shuffle_buffer=1,
    workers=2,
  )
  with pytest.raises(failures.TooManySampleErrors, match=r'of the last \d+ samples failed'):
    _epoch(paths, config)


@pytest.mark.parametrize(
  'code, words',
  [
    (-9, 'killed by SIGKILL, which is usually the out-of-memory killer'),
    (-11, 'killed by SIGSEGV'),
    (3, 'exit code 3'),
  ],
)
def test_grains_worker_death_becomes_a_clear_error(code, words):
  grain_error = RuntimeError(
    f'Worker process was terminated unexpectedly with exit code {code}. Search the logs above '
    'for the source of the crash.'
  )
  died = failures.worker_death(grain_error)
  assert isinstance(died, failures.DataWorkerDied)
  assert words in str(died) and 'rerun the same command' in str(died)
  assert failures.worker_death(RuntimeError('something else')) is None
