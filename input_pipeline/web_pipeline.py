"""The grain pipeline over img2dataset webdataset shards: order, decoding, batching, counts.

  shard files (every pattern of every dataset, one list)
    -> per epoch, a seeded shuffle of the list; process p of n takes positions p, p + n, ...
    -> TarShard per file, `cycle_length` of them read interleaved      (raw bytes)
    -> window shuffle: `shuffle_buffer` samples at a time, permuted    (raw bytes)
    -> decode, crop, augment, caption + prompted words -> token ids    (`make_example`)
    -> batches of the process's rows; damaged or failing samples dropped and counted per
       reason, the run stopped when errors are systematic (failures.py)
    -> `workers` processes (grain mp_prefetch), each building whole batches

Every random draw of a sample comes from (seed, shard position, index in shard), so a sample
is transformed the same way whichever worker or host reads it. Hosts read disjoint shards in
each epoch, and every shard once per epoch. The iterator's state (JSON) holds each open
shard's byte offset and the window's start, so a restored iterator yields exactly the batches
the uninterrupted one would have: nothing repeats and nothing is skipped, provided `workers`
and the process count are unchanged. With W workers the window is shuffle_buffer / W per
worker, so the buffered samples stay at shuffle_buffer.
"""

import collections
import dataclasses
import functools
from typing import Any, Iterator, Sequence

import grain
import numpy as np
from absl import flags

from groupvit_jax.tokenizer import tokenize
from input_pipeline import failures, image_transforms, nouns, text, webdataset
from input_pipeline.webdataset import SKIP_REASONS


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What the pipeline makes of each sample, and how it orders and parallelises them."""

  transform: image_transforms.TransformConfig = image_transforms.TransformConfig()
  num_prompts: int = 3  # K prompted words per caption; 0: the caption alone
  # A training config must still give config.data.context_length, the text tower's, which the
  # tokens must match; the default serves tools and tests.
  context_length: int = dataclasses.field(default=77, metadata={'required': True})
  shuffle_buffer: int = 10_000
  cycle_length: int = 4  # shards read at once, per worker
  workers: int = 0  # 0: in this process


def make_example(record: dict, seed: int, config: PipelineConfig) -> dict:
  """A raw record -> {'image': uint8 [S, S, 3], 'text': int32 [1 + K, L], 'skip': ''} (and
  'augment', the image's draws for the train step, when they are applied on the device), or
  {'skip': reason} for a sample that is dropped: damaged, or 'transform_error' (with the
  error's 'kind') when decoding, augmenting or tokenising it raised anything else."""
  try:
    return _make_example(record, seed, config)
  except Exception as error:  # pylint: disable=broad-except  # one sample must not stop a run
    sample = f'{record["key"]!r} (shard position {record["position"]})'
    return {'skip': 'transform_error', 'kind': failures.sample_error(error, sample)}


def _make_example(record: dict, seed: int, config: PipelineConfig) -> dict:
  if record['skip']:
    return {'skip': record['skip']}
  if record['caption'] is None:
    return {'skip': 'missing_caption'}
  try:
    caption = record['caption'].decode('utf-8').strip()
  except UnicodeDecodeError:
    return {'skip': 'caption_not_utf8'}
  if not caption:
    return {'skip': 'empty_caption'}
  rng = np.random.default_rng([seed, record['position'], record['index']])
  try:
    image = image_transforms.train_transform(record['image'], rng, config.transform)
  except image_transforms.DamagedImage as damage:
    return {'skip': damage.reason}
  # num_prompts 0 (no multi-label loss): the caption alone, without tagging it.
  words = nouns.prompt_words(caption) if config.num_prompts else ()
  texts = text.prompted_texts(caption, words, rng, config.num_prompts)
  return {**image, 'text': tokenize(texts, config.context_length), 'skip': ''}


def _stack(examples: list[dict], fields: dict) -> dict:
  """The examples' arrays stacked along a new first axis, nested dicts ('augment') too."""
  return {
    k: _stack([e[k] for e in examples], v)
    if isinstance(v, dict)
    else np.stack([e[k] for e in examples])
    for k, v in fields.items()
  }


class _BatchIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, batches: '_Batches'):
    super().__init__(parent)
    self._batches = batches
    self._error_rate = failures.SampleErrorRate()

  def __next__(self) -> dict:
    examples = []
    skipped = np.zeros(len(SKIP_REASONS), np.int64)
    in_a_row = shards_failed = 0
    while len(examples) < self._batches.batch_size:
      try:
        example = next(self._parent)
      except StopIteration:
        # The end of a finite stream: a last, short batch, or only the last counts.
        if not examples and not skipped.any():
          raise
        break
      self._error_rate.add(example.get('kind'))
      if not example['skip']:
        examples.append(example)
        in_a_row = shards_failed = 0
        continue
      skipped[SKIP_REASONS.index(example['skip'])] += 1
      in_a_row += 1
      shards_failed += example['skip'] == 'unreadable_shard'
      if (
        in_a_row >= failures.MAX_CONSECUTIVE_SKIPS
        or shards_failed >= self._batches.max_failed_shards
      ):
        counts = {r: int(n) for r, n in zip(SKIP_REASONS, skipped) if n}
        raise failures.NothingReadable(
          f'{in_a_row} samples in a row could not be used ({counts}): check config.data.shards '
          'and the shard files (python -m input_pipeline.inspect --shards ...)'
        )
    if not examples:
      return {**self._batches.empty, 'skipped': skipped}
    fields = {k: v for k, v in examples[0].items() if k != 'skip'}
    return {**_stack(examples, fields), 'skipped': skipped}

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class _Batches(grain.IterDataset):
  """Batches of good examples; 'skipped' counts the damaged ones dropped on the way."""

  def __init__(
    self,
    parent: grain.IterDataset,
    batch_size: int,
    config: PipelineConfig,
    max_failed_shards: int,
  ):
    super().__init__(parent)
    self.batch_size = batch_size
    self.max_failed_shards = max_failed_shards
    size = config.transform.image_size
    # What a batch of no examples holds: the end of a finite stream, with only skip counts.
    self.empty = {
      'image': np.zeros((0, size, size, 3), np.uint8),
      'text': np.zeros((0, 1 + config.num_prompts, config.context_length), np.int32),
    }
    if config.transform.augment_on_device:
      draws = image_transforms.augment_params(np.random.default_rng(0), config.transform)
      self.empty['augment'] = {
        k: np.zeros((0, *np.shape(v)), np.asarray(v).dtype) for k, v in draws.items()
      }

  def __iter__(self) -> _BatchIterator:
    return _BatchIterator(self._parent.__iter__(), self)


def _open_shard(
  local_index: int, path: str, process_index: int, process_count: int
) -> webdataset.TarShard:
  return webdataset.TarShard(path, local_index * process_count + process_index)


def build(
  paths: Sequence[str],
  batch_size: int,
  seed: int,
  config: PipelineConfig = PipelineConfig(),
  process_index: int = 0,
  process_count: int = 1,
  num_epochs: int | None = None,
) -> grain.IterDataset:
  """The grain dataset of this process's batches of `batch_size` (see the module docstring).

  `num_epochs` None repeats forever (training); otherwise the last batch may be short.
  """
  if not paths:
    raise ValueError('no shard files given')
  # Position k of the endless stream is file k mod len(paths) of epoch k // len(paths)'s
  # shuffle; this process takes positions process_index, process_index + process_count, ...
  files = grain.MapDataset.source(list(paths)).shuffle(seed=seed).repeat(num_epochs)
  files = files[process_index::process_count]
  shards = files.map_with_index(
    functools.partial(_open_shard, process_index=process_index, process_count=process_count)
  )
  samples = grain.experimental.InterleaveIterDataset(shards, cycle_length=config.cycle_length)
  if config.shuffle_buffer > 1:
    samples = grain.experimental.WindowShuffleIterDataset(
      samples,
      window_size=max(1, config.shuffle_buffer // max(1, config.workers)),
      seed=seed + process_index,
    )
  examples = samples.map(functools.partial(make_example, seed=seed, config=config))
  # A worker sees a random shard of its process's list at a time, so it gives up after 16x as
  # many unreadable shards in a row as the list is long: with every shard broken that takes
  # seconds; with even one readable shard, a false alarm has odds below (1 - 1/N)^16N < 1e-6.
  shards_per_process = max(1, len(paths) // process_count)
  batches = _Batches(examples, batch_size, config, 16 * shards_per_process)
  if config.workers:
    # grain's workers read absl flags, unparsed when not started by absl.app (tests, tools).
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
  return batches


class WebDatasetIterator(Iterator[dict]):
  """The trainer's iterator over `build`'s batches: {'image', 'text'} per step, with the
  damaged samples counted per reason since the run began (`counters`, kept in the state)."""

  def __init__(self, dataset: grain.IterDataset):
    self._iterator = iter(dataset)
    self.skipped = collections.Counter()

  def __next__(self) -> dict:
    try:
      batch = dict(next(self._iterator))
    except RuntimeError as error:
      died = failures.worker_death(error)
      if died is None:
        raise
      raise died from error
    for reason, count in zip(SKIP_REASONS, batch.pop('skipped').tolist()):
      if count:
        self.skipped[reason] += count
    return batch

  def counters(self) -> dict[str, int]:
    """{'skipped': total, 'skipped_<reason>': count} for every reason."""
    out = {f'skipped_{reason}': self.skipped[reason] for reason in SKIP_REASONS}
    out['skipped'] = sum(self.skipped.values())
    return out

  def get_state(self) -> dict[str, Any]:
    return {'grain': self._iterator.get_state(), 'skipped': dict(self.skipped)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._iterator.set_state(state['grain'])
    self.skipped = collections.Counter(state['skipped'])

  def close(self) -> None:
    close = getattr(self._iterator, 'close', None)
    if close is not None:
      close()
