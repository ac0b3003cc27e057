"""Start-up checks of an experiment config: unknown or missing keys and impossible values fail
before anything is built, with the key named and the nearest known spelling suggested."""

import dataclasses
import difflib
import inspect
from typing import Any, Iterable, Mapping

from groupvit_jax import evaluators
from groupvit_jax.models import layers
from groupvit_jax.models.groupvit import GroupViT, image_tower_class
from groupvit_jax.models.text import TextTower
from groupvit_jax.training import profiling
from input_pipeline import train_data


class ConfigError(ValueError):
  """A config that cannot run; the message says which key and why."""


TOP_LEVEL = {
  'seed': True,
  'model': True,
  'batch_size': True,
  # Durations: epochs of num_train_examples, converted by training/steps.py at run time, or
  # explicit steps, which win.
  'epochs': False,
  'num_train_examples': False,
  'total_steps': False,
  'eval_every_epochs': False,
  'eval_every_steps': False,
  'log_every_steps': True,
  'checkpoint_every_steps': True,
  'optimizer': True,
  'mesh': True,
  'data': True,
  'keep_checkpoints': False,
  'evals': False,
  'profile_steps': False,  # (first, last) steps to trace; training/profiling.py
  'contrastive_chunks': False,  # embed the batch in pieces; training/grad_cache.py
  'text_length_multiple': False,  # cut texts to the batch's length; training/text_trim.py
}
OPTIMIZER = {
  'lr': True,
  'warmup_lr': True,
  'min_lr': True,
  'scale_lr_with_batch': False,  # the three rates x global batch / 4096, as released
  'warmup_epochs': False,
  'warmup_steps': False,  # optimizer updates; wins over warmup_epochs
  'weight_decay': True,
  'b1': True,
  'b2': True,
  'eps': True,
  'grad_clip_norm': True,
  'grad_accum_steps': False,
}
MESH = {'data': False, 'fsdp': False}
# Integer settings and their least values, checked where present. The explicit durations may
# also be None: training/steps.py then derives them from epochs.
POSITIVE_INTS = {
  'batch_size': 1,
  'log_every_steps': 1,
  'checkpoint_every_steps': 1,
  'num_train_examples': 1,
  'total_steps': 1,
  'eval_every_steps': 0,  # 0: evaluate at the end only
  'optimizer.warmup_steps': 0,
  'optimizer.grad_accum_steps': 1,
  'contrastive_chunks': 1,
  'text_length_multiple': 0,  # 0: the full context length
  'data.num_prompts': 0,  # 0: no prompted words and no multi-label loss (training/losses.py)
}
DERIVED_WHEN_NONE = ('total_steps', 'eval_every_steps', 'optimizer.warmup_steps')


# Fields GroupViT sets on both towers: config.model keys, not config.model.vision/text ones.
MODEL_WIDE = {'dtype', 'remat', 'attention'}


def _module_fields(module: type) -> set[str]:
  return {f.name for f in dataclasses.fields(module)} - {'parent', 'name'} - MODEL_WIDE


def _check_keys(prefix: str, section: Mapping, known: Mapping[str, bool] | Iterable[str]) -> None:
  known = known if isinstance(known, Mapping) else dict.fromkeys(known, False)
  unknown = [k for k in section if k not in known]
  if unknown:
    hints = []
    for key in unknown:
      close = difflib.get_close_matches(key, list(known), n=1)
      hints.append(f'{prefix}.{key}' + (f' (did you mean {prefix}.{close[0]}?)' if close else ''))
    raise ConfigError(
      f'unknown config key {", ".join(hints)}; known keys of {prefix}: {", ".join(sorted(known))}'
    )
  absent = [k for k, required in known.items() if required and k not in section]
  if absent:
    raise ConfigError(f'missing config key {", ".join(f"{prefix}.{k}" for k in absent)}')


def check(config: Mapping[str, Any]) -> None:
  """Raises ConfigError for the first problem found."""
  _check_keys('config', config, TOP_LEVEL)
  for path, least in POSITIVE_INTS.items():
    section, _, key = path.rpartition('.')
    values = config[section] if section else config
    if key not in values or (values[key] is None and path in DERIVED_WHEN_NONE):
      continue  # required keys are checked by the tables
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      kind = 'a positive integer' if least else 'a non-negative integer'
      derive = ' (or None, to derive it from epochs)' if path in DERIVED_WHEN_NONE else ''
      raise ConfigError(f'config.{path} must be {kind}{derive}, got {value!r}')
  try:
    profiling.check_steps(config.get('profile_steps'))
  except ValueError as error:
    raise ConfigError(str(error)) from None
  _check_keys('config.model', config['model'], _module_fields(GroupViT) | MODEL_WIDE)
  try:
    layers.check_attention(config['model'].get('attention', 'auto'))
    layers.remat_policy(config['model'].get('remat', 'none'))
    tower = image_tower_class(config['model'].get('image_tower', 'groupvit'))
  except ValueError as error:
    raise ConfigError(str(error)) from None
  _check_keys('config.model.vision', config['model'].get('vision', {}), _module_fields(tower))
  _check_keys('config.model.text', config['model'].get('text', {}), _module_fields(TextTower))
  _check_keys('config.optimizer', config['optimizer'], OPTIMIZER)
  _check_keys('config.mesh', config['mesh'], MESH)
  data = config['data']
  if data.get('name') not in train_data.SOURCES:
    raise ConfigError(
      f'config.data.name is {data.get("name")!r}; expected one of {sorted(train_data.SOURCES)}'
    )
  _check_keys('config.data', data, train_data.data_keys(data['name']))
  model = config['model']
  for data_key, model_key in (('image_size', 'vision'), ('context_length', 'text')):
    model_value = model.get(model_key, {}).get(data_key)
    if data_key in data and model_value is not None and data[data_key] != model_value:
      raise ConfigError(
        f'config.data.{data_key} ({data[data_key]}) differs from '
        f'config.model.{model_key}.{data_key} ({model_value}): set both'
      )
  for name, settings in config.get('evals', {}).items():
    kind = settings.get('type')
    if kind not in evaluators.EVALUATORS:
      raise ConfigError(
        f'config.evals.{name}.type is {kind!r}; expected one of {sorted(evaluators.EVALUATORS)}'
      )
    parameters = inspect.signature(evaluators.evaluator_class(kind)).parameters
    known = {k: p.default is inspect.Parameter.empty for k, p in parameters.items()}
    _check_keys(f'config.evals.{name}', settings, {'type': True, **known})
