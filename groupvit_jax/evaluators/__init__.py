"""Evaluators: plug-ins the trainer runs every `eval_every_steps` and at the end.

An evaluator is built from one entry of `config.evals` (name -> settings with a 'type') and
has `run(inference) -> {metric: float}` and `pictures(inference) -> {name: uint8 [H, W, 3]}`
(what the trainer writes to pictures/ and TensorBoard).
"""

import importlib
from typing import Any, Mapping

# type -> (module, class). Modules load when an evaluator of theirs is built, so that the
# light ones (datasets, metrics) import without JAX.
EVALUATORS = {
  'synthetic_segmentation': ('synthetic_segmentation', 'SyntheticSegmentation'),
  'zero_shot_segmentation': ('zero_shot_segmentation', 'ZeroShotSegmentation'),
  'zero_shot_classification': ('zero_shot_classification', 'ZeroShotClassification'),
}


def evaluator_class(kind: str) -> type:
  """The evaluator class of a `type` in EVALUATORS."""
  module, name = EVALUATORS[kind]
  return getattr(importlib.import_module(f'{__name__}.{module}'), name)


def create(eval_configs: Mapping[str, Mapping[str, Any]]) -> dict:
  """{name: evaluator} for `config.evals`."""
  evaluators = {}
  for name, settings in eval_configs.items():
    settings = dict(settings)
    kind = settings.pop('type', None)
    if kind not in EVALUATORS:
      raise ValueError(
        f'config.evals.{name}.type is {kind!r}; expected one of {sorted(EVALUATORS)}'
      )
    evaluators[name] = evaluator_class(kind)(**settings)
  return evaluators
