"""The independent reference: transformers' PyTorch GroupViTModel with perturbed weights.

Also writes the same weights in the NVlabs layout, using a rename table written here from the
released checkpoint's key names (docs/released_model.md, "Released checkpoints"), independently
of groupvit_jax's own.
"""

import functools
import re

import numpy as np
import torch
import transformers

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# A GroupViT small enough for fast tests that still has two grouping stages, a group projector
# and a stage without group tokens; head counts differ from the width/64 default on purpose.
TINY = dict(
  vision_config=dict(
    hidden_size=64,
    intermediate_size=256,
    depths=[2, 1, 1],
    num_hidden_layers=4,
    num_group_tokens=[8, 4, 0],
    num_output_groups=[8, 4, 4],
    num_attention_heads=2,
    image_size=64,
    patch_size=16,
  ),
  text_config=dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
  ),
  projection_dim=32,
  projection_intermediate_dim=128,
)


def make_model(seed: int, **config_kwargs) -> transformers.GroupViTModel:
  """An eval-mode GroupViTModel whose every parameter and BatchNorm statistic is perturbed."""
  torch.manual_seed(seed)
  model = transformers.GroupViTModel(transformers.GroupViTConfig(**config_kwargs)).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if name.endswith('logit_scale'):
        p.copy_(torch.tensor(2.0 + 0.5 * torch.rand((), generator=gen).item()))
      elif p.ndim == 1 and ('norm' in name or 'projection.1' in name) and name.endswith('weight'):
        p.copy_(1.0 + 0.2 * noise)  # LayerNorm / BatchNorm scales away from 1
      elif re.search(r'\.assign\.[qk]_proj\.weight$', name):
        # Spread the assignment logits: with 0.02-scale weights every group gets ~1/S of each
        # token and argmax would be decided by float rounding, in PyTorch and here alike.
        p.copy_(0.1 * noise)
      else:
        p.add_(0.02 * noise + 0.01)  # nothing left at exactly 0
    for name, b in model.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(0.1 * torch.randn(b.shape, generator=gen))
      elif name.endswith('running_var'):
        b.copy_(0.5 + torch.rand(b.shape, generator=gen))
  return model


def random_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def random_tokens(seed: int, n: int, vocab: int = 49406, context: int = 77) -> np.ndarray:
  """[n, context] int32 rows: SOT, random ids, EOT, zero padding, of varied lengths."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((n, context), np.int32)
  for i in range(n):
    length = int(rng.integers(1, context - 1))
    tokens[i, 0] = 49406
    tokens[i, 1 : length + 1] = rng.integers(1, vocab, length)
    tokens[i, length + 1] = 49407
  return tokens


def pixel_values(images_uint8: np.ndarray) -> torch.Tensor:
  x = (images_uint8.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def outputs(
  model: transformers.GroupViTModel, images_uint8: np.ndarray, tokens: np.ndarray
) -> dict:
  """Embeddings, logits and each stage's soft and hard assignment maps, as numpy arrays."""
  hard_maps = []
  assigners = [
    m
    for m in model.modules()
    if isinstance(m, transformers.models.groupvit.modeling_groupvit.GroupViTAssignAttention)
  ]
  originals = []
  for m in assigners:
    original = m.get_attn
    originals.append(original)

    def recording(attn, gumbel=True, hard=True, _original=original):
      out = _original(attn, gumbel=gumbel, hard=hard)
      if gumbel and hard:  # the assignment the block merges tokens with
        hard_maps.append(out.detach().numpy().copy())
      return out

    m.get_attn = recording
  embeddings = model.vision_model.embeddings
  forward = embeddings.forward
  # transformers does not pass interpolate_pos_encoding down to the vision embeddings.
  embeddings.forward = functools.partial(forward, interpolate_pos_encoding=True)
  try:
    with torch.no_grad():
      out = model(
        input_ids=torch.from_numpy(tokens.astype(np.int64)),
        pixel_values=pixel_values(images_uint8),
        output_attentions=True,
      )
  finally:
    embeddings.forward = forward
    for m, original in zip(assigners, originals):
      m.get_attn = original
  return {
    'image_embeds': out.image_embeds.numpy(),
    'text_embeds': out.text_embeds.numpy(),
    'logits_per_image': out.logits_per_image.numpy(),
    'soft': [a.numpy() for a in out.vision_model_output.attentions],
    'hard': hard_maps,
  }


# HF name -> NVlabs name, for the test's own NVlabs-format checkpoint.
_TO_NVLABS = [
  (r'^vision_model\.embeddings\.position_embeddings$', 'img_encoder.pos_embed'),
  (r'^vision_model\.embeddings\.patch_embeddings\.projection\.', 'img_encoder.patch_embed.proj.'),
  (r'^vision_model\.embeddings\.layernorm\.', 'img_encoder.patch_embed.norm.'),
  (
    r'^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_norm(\d)\.',
    r'img_encoder.layers.\1.blocks.\2.norm\3.',
  ),
  (
    r'^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.out_proj\.',
    r'img_encoder.layers.\1.blocks.\2.attn.proj.',
  ),
  (
    r'^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.mlp\.',
    r'img_encoder.layers.\1.blocks.\2.mlp.',
  ),
  (
    r'^vision_model\.encoder\.stages\.(\d+)\.downsample\.pre_assign_attn\.attn\.out_proj\.',
    r'img_encoder.layers.\1.downsample.pre_assign_attn.attn.proj.',
  ),
  (r'^vision_model\.encoder\.stages\.(\d+)\.', r'img_encoder.layers.\1.'),
  (r'^vision_model\.layernorm\.', 'img_encoder.norm.'),
  (r'^text_model\.embeddings\.token_embedding\.weight$', 'text_encoder.token_embedding.weight'),
  (r'^text_model\.embeddings\.position_embedding\.weight$', 'text_encoder.positional_embedding'),
  (
    r'^text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.',
    r'text_encoder.transformer.resblocks.\1.ln_\2.',
  ),
  (
    r'^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.',
    r'text_encoder.transformer.resblocks.\1.attn.out_proj.',
  ),
  (
    r'^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.',
    r'text_encoder.transformer.resblocks.\1.mlp.c_fc.',
  ),
  (
    r'^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.',
    r'text_encoder.transformer.resblocks.\1.mlp.c_proj.',
  ),
  (r'^text_model\.final_layer_norm\.', 'text_encoder.ln_final.'),
  (r'^(visual|text)_projection\.0\.', r'\1_projector.linear_hidden.0.'),
  (r'^(visual|text)_projection\.1\.', r'\1_projector.linear_hidden.1.'),
  (r'^(visual|text)_projection\.3\.', r'\1_projector.linear_out.'),
  (r'^visual_projector\.', 'img_projector.'),
]


def nvlabs_state_dict(model: transformers.GroupViTModel, multi_label_logit_scale: float) -> dict:
  """The model's weights as the NVlabs code stores them (fused qkv, Conv1d heads)."""
  sd = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith('position_ids')}
  out = {}
  fused = {}
  for key, value in sd.items():
    m = re.match(
      r'^(vision|text)_model\.encoder\.(stages\.\d+\.layers|layers)\.(\d+)'
      r'\.self_attn\.([qkv])_proj\.(weight|bias)$',
      key,
    )
    if m:
      fused.setdefault(key.replace(f'{m.group(4)}_proj', 'qkv'), {})[m.group(4)] = value
      continue
    name = key
    for pattern, repl in _TO_NVLABS:
      name = re.sub(pattern, repl, name)
    if re.search(r'projector\.linear_(hidden\.0|out)\.weight$', name):
      value = value[:, :, None]  # Linear -> Conv1d(kernel_size=1)
    out[name] = value
  for key, parts in fused.items():
    value = torch.cat([parts['q'], parts['k'], parts['v']], 0)
    leaf = key.rsplit('.', 1)[1]
    m = re.match(r'^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.', key)
    if m:
      out[f'img_encoder.layers.{m.group(1)}.blocks.{m.group(2)}.attn.qkv.{leaf}'] = value
    else:
      layer = re.match(r'^text_model\.encoder\.layers\.(\d+)\.', key).group(1)
      out[f'text_encoder.transformer.resblocks.{layer}.attn.in_proj_{leaf}'] = value
  out['multi_label_logit_scale'] = torch.tensor(multi_label_logit_scale)
  return out
