"""Training batches for the trainer: one iterator interface over every data source.

An iterator yields this process's share of each global batch as NumPy arrays,
'image' uint8 [b, H, W, 3] and 'text' int32 [b, 1 + K, L] (caption, then K prompted nouns),
and has `get_state()` / `set_state(state)` (JSON-able) so the trainer's checkpoints resume the
data exactly where they stopped, and `counters()`: counts the trainer logs with its metrics
(samples skipped as damaged, per reason), and `close()` to stop its threads or processes.

  it = create_iterator(config.data, config.batch_size, config.seed)
  batch = next(it)
"""

import collections
import concurrent.futures
from typing import Any, Iterator, Mapping

import numpy as np

from groupvit_jax.tokenizer import tokenize
from input_pipeline import image_transforms, shards, synthetic, text, web_pipeline

# Per source (config.data.name): its config keys, True where required.
DATA_KEYS = {
  'synthetic': {
    'name': True,
    'image_size': True,
    'context_length': True,
    'num_prompts': False,
    'min_objects': False,
    'max_objects': False,
    'shape_colours': False,
    'caption_attributes': False,
  },
  'webdataset': {
    'name': True,
    'shards': True,
    'context_length': True,
    'num_prompts': False,
    'image_size': False,
    'min_scale': False,
    'randaugment': False,
    'random_erasing': False,
    'colour_jitter': False,
    'shuffle_buffer': False,
    'cycle_length': False,
    'workers': False,
  },
}

WEBDATASET_LAYOUT = (
  'img2dataset webdataset shards: .tar files of KEY.jpg (or .png, .webp) with its caption in '
  'KEY.txt, named by brace patterns such as /data/cc12m/{00000..01242}.tar'
)


class SyntheticIterator(Iterator[dict]):
  """The synthetic train split in index order: global batch `s` holds examples
  [s * B, (s + 1) * B); process `p` of `n` takes rows [p * B / n, (p + 1) * B / n) of it.

  Prompts are drawn per example from (seed, index), so every batch is a pure function of the
  step and the state is just that step. Batches are made `prefetch` ahead in a thread.
  """

  def __init__(
    self,
    config: synthetic.SyntheticConfig,
    global_batch: int,
    num_prompts: int,
    context_length: int,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
  ):
    if global_batch % process_count:
      raise ValueError(f'batch_size {global_batch} is not divisible by {process_count} processes')
    self.config = config
    self.global_batch = global_batch
    self.num_prompts = num_prompts
    self.context_length = context_length
    local = global_batch // process_count
    self.rows = range(process_index * local, (process_index + 1) * local)
    self.step = 0
    self.prefetch = prefetch
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='synthetic_data')
    self._pending = collections.deque()  # futures of batches self.step, self.step + 1, ...

  def make_batch(self, step: int) -> dict:
    """This process's rows of global batch `step`."""
    indices = [step * self.global_batch + r for r in self.rows]
    data = synthetic.batch(self.config, 'train', indices)
    texts = [
      t
      for i, caption, nouns in zip(indices, data['caption'], data['nouns'])
      for t in text.prompted_texts(
        caption, nouns, np.random.default_rng([self.config.seed, i]), self.num_prompts
      )
    ]
    tokens = tokenize(texts, self.context_length)
    return {
      'image': data['image'],
      'text': tokens.reshape(len(indices), 1 + self.num_prompts, self.context_length),
    }

  def __next__(self) -> dict:
    while len(self._pending) < 1 + self.prefetch:
      self._pending.append(self._pool.submit(self.make_batch, self.step + len(self._pending)))
    batch = self._pending.popleft().result()
    self.step += 1
    return batch

  def get_state(self) -> dict:
    return {'step': self.step}

  def counters(self) -> dict[str, int]:
    """Counts to log with the metrics: none, as synthetic samples are never damaged."""
    return {}

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)

  def set_state(self, state: Mapping[str, Any]) -> None:
    for future in self._pending:
      future.cancel()
    self._pending.clear()
    self.step = int(state['step'])


def check_data_config(data_config: Mapping[str, Any]) -> None:
  """Fails early, naming the config key, when the data a config points at is not there."""
  if data_config['name'] != 'webdataset':
    return
  patterns = data_config['shards']
  paths = shards.expand(patterns)
  absent = shards.missing(paths)
  if not paths or absent:
    raise FileNotFoundError(
      f'config.data.shards: {len(absent)} of {len(paths)} shard files named by {patterns!r} '
      f'are missing{f" (first: {absent[0]})" if absent else ""}. Expected {WEBDATASET_LAYOUT}; '
      'point the key at yours with --config.data.shards=...'
    )


def create_iterator(
  data_config: Mapping[str, Any],
  global_batch: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict]:
  """The training iterator for `config.data` (its 'name' picks the source)."""
  name = data_config['name']
  if name == 'synthetic':
    return SyntheticIterator(
      synthetic.SyntheticConfig(
        image_size=data_config['image_size'],
        min_objects=data_config.get('min_objects', 1),
        max_objects=data_config.get('max_objects', 3),
        shape_colours=data_config.get('shape_colours', False),
        caption_attributes=data_config.get('caption_attributes', True),
        seed=seed,
      ),
      global_batch,
      data_config.get('num_prompts', 3),
      data_config['context_length'],
      process_index,
      process_count,
    )
  if name == 'webdataset':
    if global_batch % process_count:
      raise ValueError(f'batch_size {global_batch} is not divisible by {process_count} processes')
    defaults = image_transforms.TransformConfig()
    transform = image_transforms.TransformConfig(
      image_size=data_config.get('image_size', defaults.image_size),
      min_scale=data_config.get('min_scale', defaults.min_scale),
      randaugment=data_config.get('randaugment', defaults.randaugment),
      random_erasing=data_config.get('random_erasing', defaults.random_erasing),
      colour_jitter=data_config.get('colour_jitter', defaults.colour_jitter),
    )
    pipeline = web_pipeline.PipelineConfig(
      transform=transform,
      num_prompts=data_config.get('num_prompts', 3),
      context_length=data_config['context_length'],
      shuffle_buffer=data_config.get('shuffle_buffer', 10_000),
      cycle_length=data_config.get('cycle_length', 4),
      workers=data_config.get('workers', 0),
    )
    paths = shards.expand(data_config['shards'])
    return web_pipeline.WebDatasetIterator(
      web_pipeline.build(
        paths, global_batch // process_count, seed, pipeline, process_index, process_count
      )
    )
  raise ValueError(
    f"unknown data source config.data.name={name!r}; expected 'synthetic' or 'webdataset'"
  )
