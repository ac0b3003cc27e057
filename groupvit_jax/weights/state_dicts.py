"""Released PyTorch weights -> Flax variables.

Two layouts are read: the NVlabs state dict (`torch.save({'model': state_dict, ...})`, keys
like `img_encoder.layers.0.blocks.0.attn.qkv.weight`) and the Hugging Face `GroupViTModel`
(keys like `vision_model.encoder.stages.0.layers.0.self_attn.q_proj.weight`). A Hugging Face
state dict is first renamed to the NVlabs layout, so one table maps NVlabs names to ours.
The architecture is inferred from the tensor shapes; head counts, which no shape shows, come
from the Hugging Face config when there is one and otherwise from GroupViT-S.
"""

import re
from typing import Any, Mapping, Optional

import numpy as np

Array = np.ndarray
StateDict = dict[str, Array]


class ConversionError(ValueError):
  """A state dict that does not fit the GroupViT layout; the message lists the offending keys."""


# ---------------------------------------------------------------------------------------------
# Hugging Face -> NVlabs names.

_HF_RENAMES = [
  (r'^vision_model\.embeddings\.position_embeddings$', 'img_encoder.pos_embed'),
  (r'^vision_model\.embeddings\.patch_embeddings\.projection\.', 'img_encoder.patch_embed.proj.'),
  (r'^vision_model\.embeddings\.layernorm\.', 'img_encoder.patch_embed.norm.'),
  (r'^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.', r'img_encoder.layers.\1.blocks.\2.'),
  (r'^vision_model\.encoder\.stages\.(\d+)\.', r'img_encoder.layers.\1.'),
  (r'^vision_model\.layernorm\.', 'img_encoder.norm.'),
  (r'\.pre_assign_attn\.attn\.out_proj\.', '.pre_assign_attn.attn.proj.'),
  (r'^text_model\.embeddings\.token_embedding\.', 'text_encoder.token_embedding.'),
  (r'^text_model\.embeddings\.position_embedding\.weight$', 'text_encoder.positional_embedding'),
  (r'^text_model\.encoder\.layers\.(\d+)\.', r'text_encoder.transformer.resblocks.\1.'),
  (r'^text_model\.final_layer_norm\.', 'text_encoder.ln_final.'),
  (r'^visual_projection\.([01])\.', r'img_projector.linear_hidden.\1.'),
  (r'^visual_projection\.3\.', 'img_projector.linear_out.'),
  (r'^text_projection\.([01])\.', r'text_projector.linear_hidden.\1.'),
  (r'^text_projection\.3\.', 'text_projector.linear_out.'),
]
_HF_BLOCK_RENAMES = {  # inside img_encoder blocks / text resblocks
  'img_encoder': [
    ('.layer_norm1.', '.norm1.'),
    ('.layer_norm2.', '.norm2.'),
    ('.self_attn.out_proj.', '.attn.proj.'),
  ],
  'text_encoder': [
    ('.layer_norm1.', '.ln_1.'),
    ('.layer_norm2.', '.ln_2.'),
    ('.self_attn.out_proj.', '.attn.out_proj.'),
    ('.mlp.fc1.', '.mlp.c_fc.'),
    ('.mlp.fc2.', '.mlp.c_proj.'),
  ],
}
_HF_IGNORED = re.compile(r'(^text_model\.embeddings\.position_ids$)')


def hf_to_nvlabs(state_dict: Mapping[str, Array]) -> StateDict:
  """Renames a Hugging Face GroupViTModel state dict to the NVlabs layout.

  Separate q/k/v projections are fused (vision: `attn.qkv`, text: `attn.in_proj_*`) and the
  projection heads' Linear weights become the 1x1 Conv1d kernels the NVlabs code stores.
  Keys that do not belong to GroupViT are passed through unchanged, so that the NVlabs
  mapping reports them.
  """
  out: StateDict = {}
  qkv: dict[tuple[str, str], dict[str, Array]] = {}
  for key, value in state_dict.items():
    if _HF_IGNORED.search(key):
      continue
    name = key
    for pattern, repl in _HF_RENAMES:
      name = re.sub(pattern, repl, name)
    tower = name.split('.', 1)[0]
    in_block = '.blocks.' in name or '.resblocks.' in name
    if in_block:
      for old, new in _HF_BLOCK_RENAMES.get(tower, []):
        name = name.replace(old, new)
      m = re.match(r'^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$', name)
      if m:
        qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        continue
    if re.search(r'_projector\.linear_(hidden\.0|out)\.weight$', name) and value.ndim == 2:
      value = value[:, :, None]  # Linear [out, in] -> Conv1d [out, in, 1]
    out[name] = value
  for (prefix, leaf), parts in qkv.items():
    if set(parts) != {'q', 'k', 'v'}:
      missing = sorted({'q', 'k', 'v'} - set(parts))
      raise ConversionError(f'{prefix}: attention projections {missing} are missing')
    fused = np.concatenate([parts['q'], parts['k'], parts['v']], axis=0)
    if prefix.startswith('text_encoder'):
      out[f'{prefix}.attn.in_proj_{leaf}'] = fused
    else:
      out[f'{prefix}.attn.qkv.{leaf}'] = fused
  return out


# ---------------------------------------------------------------------------------------------
# Architecture from shapes.


def infer_model_config(
  sd: Mapping[str, Array], hf_config: Optional[Mapping[str, Any]] = None
) -> dict:
  """The GroupViT model config (see configs/cc_yfcc_2stage.py) that fits an NVlabs state dict."""

  def need(key):
    if key not in sd:
      raise ConversionError(
        f'not a GroupViT state dict: key {key!r} is missing '
        f'({len(sd)} keys present, e.g. {sorted(sd)[:3]})'
      )
    return sd[key]

  pos = need('img_encoder.pos_embed')
  width = pos.shape[-1]
  patch = need('img_encoder.patch_embed.proj.weight').shape[-1]
  grid = int(round(pos.shape[-2] ** 0.5))
  stages = sorted(
    {int(m.group(1)) for k in sd for m in [re.match(r'img_encoder\.layers\.(\d+)\.', k)] if m}
  )
  depths, group_tokens, output_groups = [], [], []
  for s in stages:
    depths.append(
      len(
        {
          m.group(1)
          for k in sd
          for m in [re.match(rf'img_encoder\.layers\.{s}\.blocks\.(\d+)\.', k)]
          if m
        }
      )
    )
    token = sd.get(f'img_encoder.layers.{s}.group_token')
    group_tokens.append(0 if token is None else token.shape[-2])
    if token is not None:
      output_groups.append(need(f'img_encoder.layers.{s}.downsample.mlp_inter.fc2.weight').shape[0])
  fc1 = need('img_encoder.layers.0.blocks.0.mlp.fc1.weight')
  text_width = need('text_encoder.token_embedding.weight').shape[1]
  text_fc = need('text_encoder.transformer.resblocks.0.mlp.c_fc.weight')
  hf_vision = (hf_config or {}).get('vision_config', {})
  hf_text = (hf_config or {}).get('text_config', {})
  return {
    'vision': {
      'image_size': grid * patch,
      'patch_size': patch,
      'width': width,
      'depths': depths,
      'num_heads': hf_vision.get('num_attention_heads', 6 if width == 384 else width // 64),
      'mlp_ratio': fc1.shape[0] / width,
      'num_group_tokens': group_tokens,
      'num_output_groups': output_groups,
    },
    'text': {
      'vocab_size': need('text_encoder.token_embedding.weight').shape[0],
      'context_length': need('text_encoder.positional_embedding').shape[0],
      'width': text_width,
      'depth': len(
        {
          m.group(1)
          for k in sd
          for m in [re.match(r'text_encoder\.transformer\.resblocks\.(\d+)\.', k)]
          if m
        }
      ),
      'num_heads': hf_text.get('num_attention_heads', text_width // 64),
      'mlp_ratio': text_fc.shape[0] / text_width,
    },
    'embed_dim': need('img_projector.linear_out.weight').shape[0],
    'projection_hidden_dim': need('img_projector.linear_hidden.0.weight').shape[0],
  }


# ---------------------------------------------------------------------------------------------
# NVlabs names -> Flax variable paths.

_MODULE_RENAMES = [
  (r'\.patch_embed\.proj\.', '.patch_embed.'),
  (r'\.layers\.(\d+)\.', r'.layers_\1.'),
  (r'\.blocks\.(\d+)\.', r'.blocks_\1.'),
  (r'\.transformer\.resblocks\.(\d+)\.', r'.resblocks_\1.'),
  (r'\.group_projector\.0\.', '.group_projector_norm.'),
  (r'\.group_projector\.1\.', '.group_projector_mlp.'),
  (r'\.linear_hidden\.0\.', '.linear_hidden.'),
  (r'\.linear_hidden\.1\.', '.bn.'),
  (r'\.attn\.out_proj\.', '.attn.proj.'),
  (r'\.attn\.in_proj_(weight|bias)$', r'.attn.qkv.\1'),
  (r'\.ln_1\.', '.norm1.'),
  (r'\.ln_2\.', '.norm2.'),
  (r'\.mlp\.c_fc\.', '.mlp.fc1.'),
  (r'\.mlp\.c_proj\.', '.mlp.fc2.'),
]
# Whole parameters that are not Linear/LayerNorm leaves: name -> (flax leaf, transform).
_SPECIAL = {
  'img_encoder.pos_embed': lambda v: v.reshape(v.shape[-2], v.shape[-1]),  # [1, N, D] -> [N, D]
  'text_encoder.positional_embedding': lambda v: v,
  'text_encoder.token_embedding.weight': lambda v: v,
  'logit_scale': lambda v: v.reshape(()),
  'multi_label_logit_scale': lambda v: v.reshape(()),
}


def _flax_leaf(name: str, value: Array) -> tuple[str, tuple[str, ...], Array]:
  """(collection, path, array) of one renamed NVlabs tensor."""
  if name in _SPECIAL:
    path = name.split('.')
    if path[-1] == 'weight':  # token_embedding.weight
      path[-1] = 'embedding'
    return 'params', tuple(path), _SPECIAL[name](value)
  *module, leaf = name.split('.')
  if leaf == 'group_token':
    return 'params', tuple(module + [leaf]), value.reshape(value.shape[-2], value.shape[-1])
  if leaf in ('running_mean', 'running_var'):
    return 'batch_stats', tuple(module + [leaf[len('running_') :]]), value
  if leaf == 'bias':
    return 'params', tuple(module + ['bias']), value
  if leaf != 'weight':
    return 'params', tuple(module + [leaf]), value
  if value.ndim == 1:  # LayerNorm / BatchNorm
    return 'params', tuple(module + ['scale']), value
  if value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
    return 'params', tuple(module + ['kernel']), value.T
  if value.ndim == 3:  # 1x1 Conv1d [out, in, 1] -> Dense [in, out]
    return 'params', tuple(module + ['kernel']), value[:, :, 0].T
  if value.ndim == 4:  # patch Conv2d [D, C, p, p] -> [p, p, C, D]
    return 'params', tuple(module + ['kernel']), value.transpose(2, 3, 1, 0)
  return 'params', tuple(module + [leaf]), value


def nvlabs_to_flax(sd: Mapping[str, Array], expected: Mapping[str, Any]) -> dict:
  """Maps an NVlabs state dict onto `expected` (the model's variables, shapes only).

  Returns {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy arrays.
  Raises ConversionError listing every unknown, missing or mis-shaped key at once.
  """
  flat_expected = {_join(path): leaf for path, leaf in _flatten(expected)}
  converted, unknown, misshaped, misshaped_targets = {}, [], [], set()
  for key, value in sd.items():
    if key.endswith('num_batches_tracked'):
      continue
    name = key
    for pattern, repl in _MODULE_RENAMES:
      name = re.sub(pattern, repl, name)
    collection, path, array = _flax_leaf(name, np.asarray(value))
    flat = _join((collection,) + path)
    if flat not in flat_expected:
      unknown.append(key)
      continue
    if tuple(array.shape) != tuple(flat_expected[flat].shape):
      misshaped.append(
        f'{key}: {tuple(np.shape(value))} gives {tuple(array.shape)}, '
        f'expected {tuple(flat_expected[flat].shape)}'
      )
      misshaped_targets.add(flat)
      continue
    converted[flat] = array.astype(np.float32)
  missing = sorted(set(flat_expected) - set(converted) - misshaped_targets)
  problems = []
  if unknown:
    problems.append(f'{len(unknown)} unknown key(s): ' + ', '.join(sorted(unknown)))
  if missing:
    problems.append(f'{len(missing)} missing parameter(s): ' + ', '.join(missing))
  if misshaped:
    problems.append(f'{len(misshaped)} mis-shaped key(s): ' + '; '.join(misshaped))
  if problems:
    raise ConversionError(
      'the state dict does not fit the inferred GroupViT architecture:\n  ' + '\n  '.join(problems)
    )
  return _unflatten(converted)


def _flatten(tree, prefix=()):
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from _flatten(v, prefix + (str(k),))
  else:
    yield prefix, tree


def _join(path) -> str:
  return '/'.join(path)


def _unflatten(flat: Mapping[str, Array]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree
