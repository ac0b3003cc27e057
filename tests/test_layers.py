"""Layers point one way: models <- weights <- inference <- evaluators <- training <- commands.

Every import in the library (at the top of a module or inside a function) goes to a module of
the same layer or a lower one, so the public inference API never depends on an evaluator, and
an evaluator never on the trainer.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('groupvit_jax', 'input_pipeline')

# Lowest first; a module belongs to the longest prefix listed.
LAYERS = (
  (
    'groupvit_jax.filesystem',
    'groupvit_jax.image_ops',
    'groupvit_jax.interpolation',
    'groupvit_jax.prompts',
    'groupvit_jax.tokenizer',
    'groupvit_jax.progress',
    'groupvit_jax.visualize',
  ),
  ('groupvit_jax.models', 'input_pipeline'),
  ('groupvit_jax.weights',),
  (
    'groupvit_jax',
    'groupvit_jax.inference',
    'groupvit_jax.segmentation',
    'groupvit_jax.nonparametric_grouping',
  ),
  ('groupvit_jax.evaluators',),
  ('groupvit_jax.training',),
  (
    'groupvit_jax.main',
    'groupvit_jax.evaluate',
    'groupvit_jax.demo',
    'groupvit_jax.app',
    'groupvit_jax.convert',
    'groupvit_jax.finetune',
    'groupvit_jax.linear_probe',
    'groupvit_jax.concepts',
  ),
)


def layer_of(module: str) -> int:
  matches = [
    (len(prefix), level)
    for level, prefixes in enumerate(LAYERS)
    for prefix in prefixes
    if module == prefix or module.startswith(prefix + '.')
  ]
  assert matches, f'{module} is in no layer: add it to LAYERS'
  return max(matches)[1]


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob('*.py'):
      parts = list(path.relative_to(ROOT).with_suffix('').parts)
      if parts[-1] == '__init__':
        parts.pop()
      out['.'.join(parts)] = path
  return out


def _imports(path: pathlib.Path, modules) -> set[str]:
  """The library modules `path` imports, wherever the import statement is."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      for alias in node.names:
        name = f'{node.module}.{alias.name}'
        found.add(name if name in modules else node.module)
    elif isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
  return {name for name in found if name.split('.')[0] in PACKAGES}


@pytest.mark.parametrize('module', sorted(_modules()))
def test_imports_point_down(module):
  modules = _modules()
  upward = [
    target
    for target in sorted(_imports(modules[module], modules) - {module})
    if target != 'groupvit_jax' and layer_of(target) > layer_of(module)
  ]
  assert not upward, f'{module} (layer {layer_of(module)}) imports a higher layer: {upward}'
