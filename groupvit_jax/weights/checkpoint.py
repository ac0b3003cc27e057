"""groupvit_jax model checkpoints: a directory with `config.json` and orbax `variables/`.

Every entry point (the inference API, evaluation, fine-tuning) loads this one format; the
converter writes it from released weights. The directory may be local or a URL (gs://...).
"""

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax import filesystem
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


def _read_config(path: str) -> dict | None:
  """The config file of the checkpoint at `path`; None if `path` holds none."""
  config = filesystem.join(path, CONFIG_FILE)
  if not filesystem.isfile(config):
    return None
  try:
    content = json.loads(filesystem.read_text(config))
  except json.JSONDecodeError:
    return None
  return content if isinstance(content, dict) and content.get('format') == FORMAT else None


def is_checkpoint(path: str) -> bool:
  return _read_config(path) is not None


def save(
  directory: str,
  model_config: Mapping[str, Any],
  variables: Mapping[str, Any],
  metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
  file_format: str = FORMAT,
) -> None:
  """Writes a checkpoint that no reader takes for complete before it is. `file_format` names
  what the variables are the variables of (config.json's "format"), for models built on ours.

  A local one is written into a temporary sibling, renamed into place at the end. Object
  stores have no cheap renames: there the old checkpoint (with `overwrite`) is removed, its
  config first, and the new one written in place, its config (which `load` needs) last.
  """
  directory = filesystem.abspath(directory)
  if filesystem.exists(directory) and not overwrite:
    raise FileExistsError(f'{directory} already exists; choose another output or overwrite it')
  config = {'format': file_format, 'version': 1, 'model': _jsonable(model_config)}
  config_text = json.dumps({**config, **dict(metadata or {})}, indent=2)
  if filesystem.is_url(directory):
    _remove_remote(directory)
    try:
      _write(directory, config_text, variables)
    except BaseException:
      filesystem.rmtree(directory)
      raise
    return
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
  try:
    _write(tmp, config_text, variables)
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _remove_remote(directory: str) -> None:
  """Deletes the checkpoint at URL `directory`, its config first (it is then no checkpoint)."""
  config = filesystem.join(directory, CONFIG_FILE)
  if filesystem.exists(config):
    filesystem.remove(config)
  filesystem.rmtree(directory)


def _write(directory: str, config_text: str, variables: Mapping[str, Any]) -> None:
  """The variables, then the config file."""
  checkpointer = _checkpointer()
  checkpointer.save(
    filesystem.join(directory, VARIABLES_DIR), jax.tree.map(np.asarray, dict(variables))
  )
  checkpointer.wait_until_finished()
  filesystem.write_text(filesystem.join(directory, CONFIG_FILE), config_text)


def _checkpointer():
  # orbax loads on first use: reading or writing weights, not importing the library.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  # This process alone reads or writes these host (NumPy) arrays: in a multi-process run the
  # trainer saves the final model from process 0 only, so no barrier may wait for the others.
  me = jax.process_index()
  return ocp.StandardCheckpointer(
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}
    )
  )


def load(directory: str) -> tuple[dict, dict]:
  """(model config, variables) of a checkpoint directory."""
  config = _read_config(directory)
  if config is None:
    raise FileNotFoundError(
      f'{directory} is not a groupvit_jax checkpoint (no {CONFIG_FILE} with "format": "{FORMAT}")'
    )
  model_config = config['model']
  return model_config, restore_variables(directory, variable_shapes(build_model(model_config)))


def restore_variables(directory: str, target: Any) -> dict:
  """The variables of the checkpoint in `directory`, in the shapes of `target` (a pytree of
  ShapeDtypeStructs)."""
  return _checkpointer().restore(
    filesystem.join(filesystem.abspath(directory), VARIABLES_DIR), target
  )


def _jsonable(tree):
  if isinstance(tree, Mapping):
    return {k: _jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_jsonable(v) for v in tree]
  return tree
