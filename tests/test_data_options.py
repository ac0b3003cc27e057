"""config.data's options are the data dataclasses' fields: the config checks know exactly these
keys, and an absent key takes the dataclass default, declared nowhere else."""

import dataclasses

import pytest
import tiny_train_config

from configs import cc_yfcc_2stage
from groupvit_jax.training import config_checks
from input_pipeline import image_transforms, synthetic, train_data, web_pipeline

# The keys configs use today: user-facing names, so they must stay.
TODAY = {
  'synthetic': {
    'name',
    'image_size',
    'context_length',
    'num_prompts',
    'min_objects',
    'max_objects',
    'shape_colours',
    'caption_attributes',
  },
  'webdataset': {
    'name',
    'shards',
    'context_length',
    'num_prompts',
    'image_size',
    'min_scale',
    'randaugment',
    'random_erasing',
    'colour_jitter',
    'shuffle_buffer',
    'cycle_length',
    'workers',
  },
}
REQUIRED = {
  'synthetic': {'name', 'image_size', 'context_length'},
  'webdataset': {'name', 'shards', 'context_length'},
}


def _fields(cls, *leave_out):
  return {f.name for f in dataclasses.fields(cls)} - set(leave_out)


def _other(value):
  """A valid value of the same type that differs from `value`."""
  if isinstance(value, bool):
    return not value
  return value + 1 if isinstance(value, int) else value * 0.9 + 0.01


def _every_key(name):
  """A config.data of source `name` that gives every key a value differing from its default."""
  pipeline = dataclasses.asdict(web_pipeline.PipelineConfig())
  defaults = {
    'synthetic': {**pipeline, **dataclasses.asdict(synthetic.SyntheticConfig())},
    'webdataset': {**pipeline, **pipeline['transform']},
  }[name]
  keys = set(train_data.data_keys(name)) - {'name', 'shards'}
  shards = {'shards': '/nowhere/{0..1}.tar'} if name == 'webdataset' else {}
  return {'name': name, **shards} | {key: _other(defaults[key]) for key in keys}


def _web_pipeline(monkeypatch, data):
  """The PipelineConfig create_iterator hands the web pipeline for config.data `data`."""
  monkeypatch.setattr(web_pipeline, 'build', lambda *args: args[3])
  monkeypatch.setattr(web_pipeline, 'WebDatasetIterator', lambda built: built)
  return train_data.create_iterator(data, 8, 0)


def test_the_keys_of_each_source_are_its_dataclass_fields():
  synthetic_keys = train_data.data_keys('synthetic')
  assert set(synthetic_keys) == {'name', *train_data.TEXT_FIELDS} | _fields(
    synthetic.SyntheticConfig, 'seed'
  )
  web_keys = train_data.data_keys('webdataset')
  assert set(web_keys) == {'name', 'shards'} | _fields(image_transforms.TransformConfig) | _fields(
    web_pipeline.PipelineConfig, 'transform'
  )
  for name, keys in (('synthetic', synthetic_keys), ('webdataset', web_keys)):
    assert TODAY[name] <= set(keys)
    assert {key for key, required in keys.items() if required} == REQUIRED[name]


def _synthetic():
  return tiny_train_config.get_config()


def _web():
  return cc_yfcc_2stage.get_config()


def _set(key, value=1):
  return lambda data: data.__setitem__(key, value)


def _delete(key):
  return lambda data: data.__delitem__(key)


@pytest.mark.parametrize(
  'config, change, message',
  [
    (_synthetic, _set('min_object'), r'did you mean config\.data\.min_objects\?'),
    (_synthetic, _set('min_visibel'), r'did you mean config\.data\.min_visible\?'),
    (_synthetic, _set('seed'), r'unknown config key config\.data\.seed'),  # it is config.seed
    (_synthetic, _set('shuffle_buffer'), r'unknown config key config\.data\.shuffle_buffer'),
    (_synthetic, _delete('context_length'), r'missing config key config\.data\.context_length'),
    (_synthetic, _delete('image_size'), r'missing config key config\.data\.image_size'),
    (_web, _set('shuffle_bufer'), r'did you mean config\.data\.shuffle_buffer\?'),
    (_web, _set('max_pixel'), r'did you mean config\.data\.max_pixels\?'),
    (_web, _set('transform'), r'unknown config key config\.data\.transform'),  # flat keys only
    (_web, _set('min_objects'), r'unknown config key config\.data\.min_objects'),
    (_web, _delete('context_length'), r'missing config key config\.data\.context_length'),
    (_web, _delete('shards'), r'missing config key config\.data\.shards'),
  ],
)
def test_config_checks_know_exactly_the_keys_of_the_source(config, change, message):
  config = config()
  config_checks.check(config)
  change(config.data)
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.check(config)


def test_keys_that_are_new_dataclass_fields_pass_the_checks():
  config = _synthetic()
  config.data.min_visible = 0.03
  config_checks.check(config)
  config = _web()
  config.data.dct_scaling, config.data.max_pixels = False, 4096 * 4096
  config_checks.check(config)


def test_absent_keys_take_the_dataclass_defaults():
  web = {'name': 'webdataset', 'shards': 'x.tar', 'context_length': 16}
  assert train_data.pipeline_config(web) == web_pipeline.PipelineConfig(context_length=16)
  scenes = {'name': 'synthetic', 'image_size': 32, 'context_length': 16}
  assert train_data.synthetic_config(scenes, 5) == synthetic.SyntheticConfig(image_size=32, seed=5)
  assert train_data.text_options(scenes) == {
    'num_prompts': web_pipeline.PipelineConfig.num_prompts,
    'context_length': 16,
  }
  with pytest.raises(KeyError, match='config.data.context_length'):
    train_data.pipeline_config({'name': 'webdataset', 'shards': 'x.tar'})
  with pytest.raises(KeyError, match='config.data.image_size'):
    train_data.synthetic_config({'name': 'synthetic', 'context_length': 16}, 0)


def test_a_changed_dataclass_default_is_what_the_iterators_get(monkeypatch):
  @dataclasses.dataclass(frozen=True)
  class Pipeline(web_pipeline.PipelineConfig):
    transform: image_transforms.TransformConfig = image_transforms.TransformConfig(min_scale=0.7)
    num_prompts: int = 5
    shuffle_buffer: int = 123

  @dataclasses.dataclass(frozen=True)
  class Scenes(synthetic.SyntheticConfig):
    max_objects: int = 2

  monkeypatch.setattr(web_pipeline, 'PipelineConfig', Pipeline)
  monkeypatch.setattr(synthetic, 'SyntheticConfig', Scenes)
  web = {'name': 'webdataset', 'shards': 'x.tar', 'context_length': 16, 'image_size': 32}
  pipeline = _web_pipeline(monkeypatch, web)
  # The transform's other fields keep the pipeline's default transform, not TransformConfig's.
  expected_transform = image_transforms.TransformConfig(image_size=32, min_scale=0.7)
  assert pipeline == Pipeline(transform=expected_transform, context_length=16)
  assert (pipeline.num_prompts, pipeline.shuffle_buffer) == (5, 123)

  scenes = {'name': 'synthetic', 'image_size': 32, 'context_length': 16}
  iterator = train_data.create_iterator(scenes, 8, 7)
  iterator.close()
  assert iterator.config == Scenes(image_size=32, seed=7) and iterator.config.max_objects == 2
  assert (iterator.num_prompts, iterator.context_length) == (5, 16)


def test_a_config_giving_every_key_sets_every_field(monkeypatch):
  data = _every_key('webdataset')
  pipeline = _web_pipeline(monkeypatch, data)
  default = web_pipeline.PipelineConfig()
  for parent, config in ((default, pipeline), (default.transform, pipeline.transform)):
    for field in dataclasses.fields(config):
      if field.name != 'transform':
        value = getattr(config, field.name)
        assert value == data[field.name] != getattr(parent, field.name), field.name

  data = _every_key('synthetic')
  iterator = train_data.create_iterator(data, 8, 7)
  iterator.close()
  scenes = iterator.config
  default = synthetic.SyntheticConfig()
  for field in dataclasses.fields(scenes):
    if field.name != 'seed':
      value = getattr(scenes, field.name)
      assert value == data[field.name] != getattr(default, field.name), field.name
  assert scenes.seed == 7
  assert (iterator.num_prompts, iterator.context_length) == (
    data['num_prompts'],
    data['context_length'],
  )
