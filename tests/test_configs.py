"""configs/ hold the released architecture."""

import importlib.util
import os

import jax
import numpy as np
import transformers

from groupvit_jax import checkpoint, state_dicts

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_cc_yfcc_2stage_is_the_released_architecture():
  """transformers' default GroupViTConfig is the released gcc-yfcc model (its hub config)."""
  model_config = load_config('cc_yfcc_2stage').model.to_dict()
  hf_model = transformers.GroupViTModel(transformers.GroupViTConfig())
  released = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  inferred = state_dicts.infer_model_config(state_dicts.hf_to_nvlabs(released))
  for tower in ('vision', 'text'):
    for key, value in inferred[tower].items():
      assert np.all(np.asarray(model_config[tower][key]) == np.asarray(value)), (tower, key)
  assert model_config['embed_dim'] == inferred['embed_dim']
  assert model_config['projection_hidden_dim'] == inferred['projection_hidden_dim']

  shapes = checkpoint.variable_shapes(checkpoint.build_model(model_config))
  ours = sum(np.prod(s.shape) for s in jax.tree.leaves(shapes['params']))
  # transformers keeps no multi-label temperature; everything else is the same parameters.
  assert ours == sum(p.numel() for p in hf_model.parameters()) + 1
