"""Start-up checks of an experiment config: unknown or missing keys and impossible values fail
before anything is built, with the key named and the nearest known spelling suggested."""

import dataclasses
import difflib
import inspect
from typing import Any, Iterable, Mapping

from groupvit_jax import evaluators
from groupvit_jax.models.groupvit import GroupViT
from groupvit_jax.models.text import TextTower
from groupvit_jax.models.vision import VisionTower
from input_pipeline import train_data


class ConfigError(ValueError):
  """A config that cannot run; the message says which key and why."""


TOP_LEVEL = {
  'seed': True,
  'model': True,
  'batch_size': True,
  'total_steps': True,
  'log_every_steps': True,
  'checkpoint_every_steps': True,
  'optimizer': True,
  'mesh': True,
  'data': True,
  'keep_checkpoints': False,
  'eval_every_steps': False,
  'evals': False,
  'epochs': False,  # informational: total_steps is what the trainer reads
}
OPTIMIZER = {
  'lr': True,
  'warmup_lr': True,
  'min_lr': True,
  'warmup_steps': True,
  'weight_decay': True,
  'b1': True,
  'b2': True,
  'eps': True,
  'grad_clip_norm': True,
  'grad_accum_steps': False,
}
MESH = {'data': False, 'fsdp': False}
POSITIVE_INTS = ('batch_size', 'total_steps', 'log_every_steps', 'checkpoint_every_steps')


def _module_fields(module: type) -> set[str]:
  return {f.name for f in dataclasses.fields(module)} - {'parent', 'name', 'dtype', 'remat'}


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
  for key in POSITIVE_INTS:
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ConfigError(f'config.{key} must be a positive integer, got {config[key]!r}')
  _check_keys('config.model', config['model'], _module_fields(GroupViT) | {'remat', 'dtype'})
  _check_keys('config.model.vision', config['model'].get('vision', {}), _module_fields(VisionTower))
  _check_keys('config.model.text', config['model'].get('text', {}), _module_fields(TextTower))
  _check_keys('config.optimizer', config['optimizer'], OPTIMIZER)
  _check_keys('config.mesh', config['mesh'], MESH)
  data = config['data']
  if data.get('name') not in train_data.DATA_KEYS:
    raise ConfigError(
      f'config.data.name is {data.get("name")!r}; expected one of {sorted(train_data.DATA_KEYS)}'
    )
  _check_keys('config.data', data, train_data.DATA_KEYS[data['name']])
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
    parameters = inspect.signature(evaluators.EVALUATORS[kind]).parameters
    known = {k: p.default is inspect.Parameter.empty for k, p in parameters.items()}
    _check_keys(f'config.evals.{name}', settings, {'type': True, **known})
