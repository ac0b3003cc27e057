"""A run's durations in steps, converted from epochs when the run starts.

Configs state the length of the run, of the warm-up and between evaluations in epochs of
`config.num_train_examples` (the training set's size). They become steps here, for the batch
size the run actually has, so that `--config.batch_size=1024` still trains 30 epochs (as
Flax's imagenet example and big_vision's `utils.steps` do). An explicit `config.total_steps`,
`config.optimizer.warmup_steps` or `config.eval_every_steps` wins over its epochs.
"""

import dataclasses
import math
from typing import Any, Mapping

from groupvit_jax.training.config_checks import ConfigError


@dataclasses.dataclass(frozen=True)
class RunSteps:
  """Steps are batches (`TrainState.step`); the learning-rate schedule counts optimizer
  updates, one every `grad_accum_steps` batches."""

  total: int  # batches in the run, a multiple of grad_accum_steps
  warmup: int  # optimizer updates of learning-rate warm-up
  eval_every: int  # batches between evaluations; 0: at the end only
  steps_per_epoch: int | None  # batches per epoch; None without config.num_train_examples
  grad_accum_steps: int = 1

  @property
  def updates(self) -> int:
    """Optimizer updates in the run: the schedule's length."""
    return self.total // self.grad_accum_steps


def _ceil(x: float) -> int:
  # Rounded first so that float error (0.1 epochs of 30 steps = 3.0000000000000004) adds no step.
  return math.ceil(round(x, 6))


def _epochs(config: Mapping[str, Any], path: str, positive: bool) -> float | None:
  """The number of epochs at `path` ('epochs' or 'optimizer.warmup_epochs'); None if unset."""
  section, _, key = path.rpartition('.')
  value = (config[section] if section else config).get(key)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise ConfigError(f'config.{path} must be a non-negative number, got {value!r}')
  if positive and value == 0:
    raise ConfigError(f'config.{path} must be positive, got {value!r}')
  return value


def run_steps(config: Mapping[str, Any]) -> RunSteps:
  """The run's steps, warm-up and evaluation interval for its batch size and accumulation.

  steps per epoch = ceil(num_train_examples / batch_size); the run is rounded up to whole
  optimizer updates, and the warm-up, which counts updates, up to a whole update.
  """
  accum = config['optimizer'].get('grad_accum_steps') or 1
  examples = config.get('num_train_examples')
  steps_per_epoch = None if examples is None else -(-examples // config['batch_size'])

  def in_steps(path: str, positive: bool = False) -> float | None:
    """The epochs at `path` in steps (not rounded); None if unset."""
    epochs = _epochs(config, path, positive)
    if epochs is not None and steps_per_epoch is None:
      raise ConfigError(
        f"config.{path} needs config.num_train_examples (the training set's size, the length "
        f'of an epoch); or give the explicit steps instead'
      )
    return None if epochs is None else epochs * steps_per_epoch

  total = config.get('total_steps')
  if total is None:
    if config.get('epochs') is None or examples is None:
      missing = [f'config.{k}' for k in ('epochs', 'num_train_examples') if config.get(k) is None]
      raise ConfigError(
        f'the run has no length: set config.total_steps, or config.epochs and '
        f"config.num_train_examples (the training set's size); {' and '.join(missing)} "
        f'{"is" if len(missing) == 1 else "are"} not set'
      )
    total = accum * max(1, _ceil(in_steps('epochs', positive=True) / accum))
  elif total % accum:
    raise ConfigError(
      f'config.total_steps ({total}) must be a multiple of config.optimizer.grad_accum_steps '
      f'({accum})'
    )
  updates = total // accum

  warmup = config['optimizer'].get('warmup_steps')
  if warmup is None:
    warmup_steps = in_steps('optimizer.warmup_epochs')
    if warmup_steps is None:
      raise ConfigError(
        'the warm-up has no length: set config.optimizer.warmup_epochs or '
        'config.optimizer.warmup_steps (in optimizer updates)'
      )
    warmup = _ceil(warmup_steps / accum)
    if warmup >= updates:
      raise ConfigError(
        f'config.optimizer.warmup_epochs ({config["optimizer"]["warmup_epochs"]:g}) is '
        f"{warmup:,} optimizer updates, not fewer than the run's {updates:,}: lower it or set "
        f'config.optimizer.warmup_steps'
      )
  elif warmup >= updates:
    raise ConfigError(
      f"config.optimizer.warmup_steps ({warmup}) must be in [0, {updates}), the run's "
      f'optimizer updates'
    )

  eval_every = config.get('eval_every_steps')
  if eval_every is None:
    eval_steps = in_steps('eval_every_epochs')
    eval_every = 0 if not eval_steps else max(1, _ceil(eval_steps))
  return RunSteps(total, warmup, eval_every, steps_per_epoch, accum)


def _count(n: float, unit: str) -> str:
  return (f'{n:,}' if isinstance(n, int) else f'{n:.4g}') + f' {unit}' + ('' if n == 1 else 's')


def describe(config: Mapping[str, Any], run: RunSteps) -> str:
  """One log line: the durations the run derived (or was given), and from what."""
  batch = f'global batch {config["batch_size"]:,}'
  if run.grad_accum_steps > 1:
    batch += f' x {run.grad_accum_steps} accumulated'
  examples = config.get('num_train_examples')
  if config.get('total_steps') is None:
    length = (
      f'{_count(config["epochs"], "epoch")} of {examples:,} examples at {batch} = '
      f'{_count(run.total, "step")} ({run.steps_per_epoch:,} per epoch)'
    )
  else:
    length = f'{_count(run.total, "step")} (config.total_steps) at {batch}'
    if run.steps_per_epoch:
      length += f' = {_count(run.total / run.steps_per_epoch, "epoch")} of {examples:,} examples'

  unit = 'step' if run.grad_accum_steps == 1 else 'optimizer update'
  warmup = f'warm-up {_count(run.warmup, unit)}'
  if config['optimizer'].get('warmup_steps') is None:
    warmup += f' ({_count(config["optimizer"]["warmup_epochs"], "epoch")})'
  else:
    warmup += ' (config.optimizer.warmup_steps)'

  if not config.get('evals'):
    evaluation = 'no evaluation (config.evals is empty)'
  elif not run.eval_every:
    evaluation = 'evaluation at the end only'
  else:
    evaluation = f'evaluation every {_count(run.eval_every, "step")}'
    if config.get('eval_every_steps') is None:
      evaluation += f' ({_count(config["eval_every_epochs"], "epoch")})'
  return f'durations: {length}; {warmup}; {evaluation}'
