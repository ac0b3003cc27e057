"""Training batches for the trainer: one iterator interface over every data source.

An iterator yields this process's share of each global batch as NumPy arrays,
'image' uint8 [b, H, W, 3] and 'text' int32 [b, 1 + K, L] (caption, then K prompted nouns),
and has `get_state()` / `set_state(state)` (JSON-able) so the trainer's checkpoints resume the
data exactly where they stopped, and `counters()`: counts the trainer logs with its metrics
(samples skipped as damaged, per reason), and `close()` to stop its threads or processes.

  it = create_iterator(config.data, config.batch_size, config.seed)
  batch = next(it)

The keys of config.data are declared once, as dataclass fields: besides 'name' (and 'shards'),
a synthetic source takes SyntheticConfig's fields (but `seed`, which is config.seed) and
TEXT_FIELDS, a webdataset source PipelineConfig's, with TransformConfig's flat in place of
`transform`. An absent key keeps the field's default; `data_keys` lists them for the config
checks, True where a config must give the key.
"""

import collections
import concurrent.futures
import dataclasses
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from groupvit_jax.tokenizer import tokenize
from input_pipeline import image_transforms, shards, synthetic, text, web_pipeline

SOURCES = ('synthetic', 'webdataset')  # config.data.name
# How captions become token rows is PipelineConfig's to say; the synthetic source makes its rows
# the same way, so its keys for that (and their defaults) are these fields of PipelineConfig.
TEXT_FIELDS = ('num_prompts', 'context_length')
_PIPELINE_FIELDS = ('num_prompts', 'context_length', 'shuffle_buffer', 'cycle_length', 'workers')


def _fields(cls: type, names: Iterable[str] | None = None) -> dict[str, bool]:
  """{field: whether a config must give it} for `cls`'s fields (or those of `names`): those
  without a default, or whose metadata says a config must set them."""
  return {
    f.name: f.metadata.get('required', False)
    or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    for f in dataclasses.fields(cls)
    if names is None or f.name in names
  }


def _given(cls: type, data_config: Mapping[str, Any], names: Iterable[str] | None = None) -> dict:
  """The values `data_config` gives for `cls`'s fields (or those of `names`); KeyError names
  a required one it lacks."""
  fields = _fields(cls, names)
  for name, required in fields.items():
    if required and name not in data_config:
      raise KeyError(f'config.data.{name}')
  return {k: data_config[k] for k in fields if k in data_config}


def data_keys(name: str) -> dict[str, bool]:
  """The keys of config.data for source `name`, True where required: 'name' (and 'shards'),
  then the fields of the source's dataclasses, flat."""
  if name == 'synthetic':
    scenes = _fields(synthetic.SyntheticConfig)
    del scenes['seed']  # the run's config.seed
    return {'name': True, **scenes, **_fields(web_pipeline.PipelineConfig, TEXT_FIELDS)}
  if name == 'webdataset':
    return {
      'name': True,
      'shards': True,
      **_fields(web_pipeline.PipelineConfig, _PIPELINE_FIELDS),
      **_fields(image_transforms.TransformConfig),
    }
  raise ValueError(f'unknown data source config.data.name={name!r}; expected one of {SOURCES}')


def synthetic_config(data_config: Mapping[str, Any], seed: int) -> synthetic.SyntheticConfig:
  """The scenes of a synthetic `config.data`; `seed` is the run's."""
  return synthetic.SyntheticConfig(**_given(synthetic.SyntheticConfig, data_config), seed=seed)


def text_options(data_config: Mapping[str, Any]) -> dict[str, int]:
  """The TEXT_FIELDS of a synthetic `config.data`: how its captions become token rows."""
  options = web_pipeline.PipelineConfig(
    **_given(web_pipeline.PipelineConfig, data_config, TEXT_FIELDS)
  )
  return {name: getattr(options, name) for name in TEXT_FIELDS}


def pipeline_config(data_config: Mapping[str, Any]) -> web_pipeline.PipelineConfig:
  """The pipeline of a webdataset `config.data`; the transform's keys are flat there too."""
  given = _given(web_pipeline.PipelineConfig, data_config, _PIPELINE_FIELDS)
  default = web_pipeline.PipelineConfig(**given)
  transform = dataclasses.replace(
    default.transform, **_given(image_transforms.TransformConfig, data_config)
  )
  return dataclasses.replace(default, transform=transform)


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
      synthetic_config(data_config, seed),
      global_batch,
      **text_options(data_config),
      process_index=process_index,
      process_count=process_count,
    )
  if name == 'webdataset':
    if global_batch % process_count:
      raise ValueError(f'batch_size {global_batch} is not divisible by {process_count} processes')
    pipeline = pipeline_config(data_config)
    paths = shards.expand(data_config['shards'])
    return web_pipeline.WebDatasetIterator(
      web_pipeline.build(
        paths, global_batch // process_count, seed, pipeline, process_index, process_count
      )
    )
  raise ValueError(
    f"unknown data source config.data.name={name!r}; expected 'synthetic' or 'webdataset'"
  )
