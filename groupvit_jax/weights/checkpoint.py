"""groupvit_jax model checkpoints: a directory with `config.json` and orbax `variables/`.

Every entry point (the inference API, evaluation, fine-tuning) loads this one format; the
converter writes it from released weights.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax.models.groupvit import GroupViT

FORMAT = 'groupvit_jax'
CONFIG_FILE = 'config.json'
VARIABLES_DIR = 'variables'


def build_model(model_config: Mapping[str, Any]) -> GroupViT:
  """The GroupViT module for a model config (the `model` section of an experiment config)."""
  config = dict(model_config)
  return GroupViT(
    vision=dict(config.pop('vision', {})), text=dict(config.pop('text', {})), **config
  )


def init_inputs(model: GroupViT) -> tuple[jax.Array, jax.Array]:
  """A one-sample image and token batch of the shapes the model's parameters are built for."""
  image_size = model.vision.get('image_size', 224)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, (model.text or {}).get('context_length', 77)), jnp.int32)
  return images, tokens


def variable_shapes(model: GroupViT) -> dict:
  """The model's variables as ShapeDtypeStructs, computed without running it."""
  return jax.eval_shape(model.init, {'params': jax.random.key(0)}, *init_inputs(model))


def is_checkpoint(path: str) -> bool:
  config = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config):
    return False
  with open(config) as f:
    try:
      return json.load(f).get('format') == FORMAT
    except json.JSONDecodeError:
      return False


def save(
  directory: str,
  model_config: Mapping[str, Any],
  variables: Mapping[str, Any],
  metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
) -> None:
  """Writes a checkpoint atomically: into a temporary sibling, renamed into place at the end."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and not overwrite:
    raise FileExistsError(f'{directory} already exists; choose another output or overwrite it')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
  try:
    with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
      json.dump(
        {'format': FORMAT, 'version': 1, 'model': _jsonable(model_config), **dict(metadata or {})},
        f,
        indent=2,
      )
    checkpointer = _checkpointer()
    checkpointer.save(os.path.join(tmp, VARIABLES_DIR), jax.tree.map(np.asarray, dict(variables)))
    checkpointer.wait_until_finished()
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _checkpointer():
  # orbax loads on first use: reading or writing weights, not importing the library.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  return ocp.StandardCheckpointer()


def load(directory: str) -> tuple[dict, dict]:
  """(model config, variables) of a checkpoint directory."""
  if not is_checkpoint(directory):
    raise FileNotFoundError(
      f'{directory} is not a groupvit_jax checkpoint (no {CONFIG_FILE} with "format": "{FORMAT}")'
    )
  with open(os.path.join(directory, CONFIG_FILE)) as f:
    model_config = json.load(f)['model']
  target = variable_shapes(build_model(model_config))
  variables = _checkpointer().restore(
    os.path.join(os.path.abspath(directory), VARIABLES_DIR), target
  )
  return model_config, variables


def _jsonable(tree):
  if isinstance(tree, Mapping):
    return {k: _jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_jsonable(v) for v in tree]
  return tree
