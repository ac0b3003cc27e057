"""Released GroupViT weights (NVlabs `.pth`, Hugging Face directories) as our parameters.

  model_config, variables, source = released.convert(path)

An NVlabs checkpoint is a `torch.save` dict with a `model` state dict; a Hugging Face
GroupViTModel directory holds `config.json` and `model.safetensors` or `pytorch_model.bin`.
The architecture is inferred from the weights (state_dicts.infer_model_config). Paths may be
local or URLs (gs://...).
"""

import json
import pickle
from typing import Any, Optional

import numpy as np

from groupvit_jax import filesystem
from groupvit_jax.weights import checkpoint, state_dicts
from groupvit_jax.weights.state_dicts import ConversionError


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError(
      'reading PyTorch files (.pth, .bin) needs torch: pip install torch (the CPU build is enough)'
    ) from e
  return torch


class _Stub:
  """Stands in for classes a checkpoint pickles besides tensors (e.g. an OmegaConf config)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


def _stub_pickle_module():
  """A pickle module that rebuilds tensors and replaces every other class with _Stub.

  Training checkpoints also pickle their optimizer and config objects; reading the weights
  must neither need those classes' code nor run it, so only tensor-rebuilding globals pass.
  """
  torch = _torch()

  def allowed(module, name):
    if module == 'collections' and name == 'OrderedDict':
      return True
    if module == 'torch._utils' and name.startswith('_rebuild'):
      return True
    if module == 'torch':
      return (
        name in ('Size', 'device')
        or name.endswith('Storage')
        or isinstance(getattr(torch, name, None), torch.dtype)
      )
    return False

  class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
      return super().find_class(module, name) if allowed(module, name) else _Stub

  class PickleModule:
    pass

  module = PickleModule()
  module.Unpickler = Unpickler
  module.load = pickle.load
  module.__name__ = 'pickle'
  return module


def _torch_load(path: str) -> Any:
  """torch.load on CPU; a file that is not a readable checkpoint raises ConversionError."""
  torch = _torch()
  try:
    with filesystem.open(path, 'rb') as f:
      try:
        return torch.load(f, map_location='cpu', weights_only=True)
      except pickle.UnpicklingError as e:
        if 'Weights only load failed' not in str(e):
          raise
        # Objects besides tensors (e.g. the training config): read them as stand-ins.
        f.seek(0)
        return torch.load(
          f, map_location='cpu', weights_only=False, pickle_module=_stub_pickle_module()
        )
  except Exception as e:  # torch.load fails on damaged files with many error types
    raise ConversionError(
      f'{path} is not a readable PyTorch checkpoint (truncated or '
      f'corrupt?): {type(e).__name__}: {e}'
    ) from e


def _to_numpy(state_dict: dict) -> dict:
  torch = _torch()
  out = {}
  for key, value in state_dict.items():
    if isinstance(value, torch.Tensor):
      out[key] = (
        value.detach().to(torch.float32 if value.is_floating_point() else value.dtype).cpu().numpy()
      )
    else:
      out[key] = np.asarray(value)
  return out


def read_nvlabs(path: str) -> dict:
  """The state dict (name -> numpy array) of an NVlabs `.pth` checkpoint."""
  obj = _torch_load(path)
  if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
    obj = obj['model']
  if not isinstance(obj, dict) or not obj:
    raise ConversionError(f'{path} holds no state dict (expected a dict with a "model" entry)')
  # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
  if all(k.startswith('module.') for k in obj):
    obj = {k[len('module.') :]: v for k, v in obj.items()}
  return _to_numpy(obj)


def read_hf(directory: str) -> tuple[dict, dict]:
  """(state dict, config.json) of a Hugging Face GroupViTModel directory."""
  config_path = filesystem.join(directory, 'config.json')
  if not filesystem.isfile(config_path):
    raise ConversionError(f'{directory} has no config.json: not a Hugging Face model directory')
  try:
    config = json.loads(filesystem.read_text(config_path))
  except json.JSONDecodeError as e:
    raise ConversionError(f'{config_path} is not valid JSON: {e}') from e
  if config.get('model_type') not in (None, 'groupvit'):
    raise ConversionError(f'{directory} holds a {config.get("model_type")!r} model, not GroupViT')
  safetensors_path = filesystem.join(directory, 'model.safetensors')
  bin_path = filesystem.join(directory, 'pytorch_model.bin')
  if filesystem.isfile(safetensors_path):
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top

    try:
      state_dict = load(filesystem.read_bytes(safetensors_path))
    except Exception as e:  # safetensors raises its own error types for bad headers
      raise ConversionError(
        f'{safetensors_path} is not a readable safetensors file (truncated or corrupt?): {e}'
      ) from e
    state_dict = {
      k: v.astype(np.float32) if v.dtype.kind == 'f' else v for k, v in state_dict.items()
    }
  elif filesystem.isfile(bin_path):
    state_dict = _to_numpy(_torch_load(bin_path))
  else:
    raise ConversionError(f'{directory} has neither model.safetensors nor pytorch_model.bin')
  return state_dict, config


def convert(
  path: str, num_heads: Optional[int] = None, text_num_heads: Optional[int] = None
) -> tuple[dict, dict, str]:
  """(model config, variables, source format) for a released checkpoint file or directory."""
  if not filesystem.exists(path):
    raise FileNotFoundError(f'{path} does not exist')
  hf_config = None
  if filesystem.isdir(path):
    hf_state_dict, hf_config = read_hf(path)
    state_dict, source = state_dicts.hf_to_nvlabs(hf_state_dict), 'huggingface'
  else:
    state_dict, source = read_nvlabs(path), 'nvlabs'
  model_config = state_dicts.infer_model_config(state_dict, hf_config)
  if num_heads:
    model_config['vision']['num_heads'] = num_heads
  if text_num_heads:
    model_config['text']['num_heads'] = text_num_heads
  if 'multi_label_logit_scale' not in state_dict and 'logit_scale' in state_dict:
    # The Hugging Face port drops the multi-label temperature (used only in training).
    state_dict['multi_label_logit_scale'] = state_dict['logit_scale']
  expected = checkpoint.variable_shapes(checkpoint.build_model(model_config))
  variables = state_dicts.nvlabs_to_flax(state_dict, expected)
  return model_config, variables, source
