"""Analytic FLOP counts of GroupViT, for model FLOPs utilisation (MFU).

Only matrix products are counted (every dense layer, einsum and attention matmul, i.e. every
dot in the compiled graph), a multiply-add being 2 FLOPs. Elementwise ops, softmax, LayerNorm,
BatchNorm, GELU, the gather of the token embedding and the positional-embedding interpolation
are ignored: they are a few percent of XLA's own count, and MFU conventionally counts matmuls.
Attention is counted densely, as XLA computes it: the causal text attention costs the full
T x T scores, masked or not.

Counts follow the module code in groupvit_jax/models/ and a model config in the form of the
`model` section of configs/*.py; keys missing from it take the modules' defaults.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from groupvit_jax.models.groupvit import GroupViT
from groupvit_jax.models.text import TextTower
from groupvit_jax.models.vision import VisionTower

# Dense (not 2:4 sparse) bf16 matmul peaks per chip, FLOP/s, from the vendors' spec sheets:
# cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} and NVIDIA's A100, H100 and H200 datasheets
# (SXM parts; the H200 has the H100's compute and more memory).
PEAK_BF16_FLOPS = {
  'tpu_v4': 275e12,
  'tpu_v5e': 197e12,
  'tpu_v5p': 459e12,
  'tpu_v6e': 918e12,
  'a100': 312e12,
  'h100': 989e12,
  'h200': 989e12,
}


def _settings(module: type, config: Mapping[str, Any] | None) -> dict:
  """`config` over the module's field defaults."""
  defaults = {
    f.name: f.default for f in dataclasses.fields(module) if f.default is not dataclasses.MISSING
  }
  return {**defaults, **dict(config or {})}


def _dense(rows: int, d_in: int, d_out: int) -> int:
  return 2 * rows * d_in * d_out


def _mlp(rows: int, d_in: int, hidden: int, d_out: int) -> int:
  return _dense(rows, d_in, hidden) + _dense(rows, hidden, d_out)


def _attention_matmuls(q_tokens: int, kv_tokens: int, width: int) -> int:
  """Scores q.k and the weighted sum of v, summed over heads (head_dim * heads = width)."""
  return 2 * _dense(q_tokens, width, kv_tokens)


def transformer_block_flops(num_tokens: int, width: int, mlp_ratio: float = 4.0) -> int:
  """One layers.TransformerBlock on `num_tokens` tokens: qkv, attention, proj, MLP."""
  t, d = num_tokens, width
  return (
    _dense(t, d, 3 * d)
    + _attention_matmuls(t, t, d)
    + _dense(t, d, d)
    + _mlp(t, d, int(d * mlp_ratio), d)
  )


def _grouping_block_flops(
  num_tokens: int, group_tokens: int, output_groups: int, width: int, mlp_ratio: float
) -> int:
  """grouping.GroupingBlock: N image tokens and S_in group tokens -> S_out groups."""
  n, s, d = num_tokens, output_groups, width
  hidden = int(d * mlp_ratio)
  # GroupingBlock's default tokens_mlp_ratio of 0.5; the token axis is mixed for each channel.
  mlp_inter = _mlp(d, group_tokens, int(d * 0.5), s)
  cross_attention = (
    _dense(s, d, d)  # q_proj
    + 2 * _dense(n, d, d)  # k_proj, v_proj
    + _attention_matmuls(s, n, d)
    + _dense(s, d, d)  # proj
    + _mlp(s, d, hidden, d)
  )
  assign = (
    _dense(s, d, d)  # q_proj
    + 2 * _dense(n, d, d)  # k_proj, v_proj
    + _attention_matmuls(s, n, d)  # logits, then assignment @ v
    + _dense(s, d, d)  # proj
  )
  mlp_channels = _mlp(s, d, hidden, d)
  return mlp_inter + cross_attention + assign + mlp_channels


def _projection_head_flops(model_config: Mapping[str, Any], in_dim: int, rows: int = 1) -> int:
  top = _settings(GroupViT, model_config)
  return _mlp(rows, in_dim, top['projection_hidden_dim'], top['embed_dim'])


def image_forward_flops(
  model_config: Mapping[str, Any],
  image_size: int | Sequence[int] | None = None,
  group_embeddings: bool = False,
) -> int:
  """Forward FLOPs of encode_image on one image of `image_size` (H, W), or a side length.

  The default size is the config's training resolution. `group_embeddings` adds the
  projection of every final segment token that encode_image does at inference (not in
  training).
  """
  v = _settings(VisionTower, model_config.get('vision'))
  if image_size is None:
    image_size = v['image_size']
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  p, d, mlp_ratio = v['patch_size'], v['width'], v['mlp_ratio']
  tokens = (h // p) * (w // p)  # the stride-p patchify drops partial patches

  flops = _dense(tokens, p * p * 3, d)  # patch embedding
  prev_group_tokens = 0
  for i, depth in enumerate(v['depths']):
    group_tokens = v['num_group_tokens'][i]
    if group_tokens and prev_group_tokens:
      flops += _mlp(d, prev_group_tokens, d // 2, group_tokens)  # group_projector_mlp
    flops += depth * transformer_block_flops(tokens + group_tokens, d, mlp_ratio)
    if group_tokens:
      output_groups = v['num_output_groups'][i]
      flops += _grouping_block_flops(tokens, group_tokens, output_groups, d, mlp_ratio)
      tokens, prev_group_tokens = output_groups, group_tokens

  flops += _projection_head_flops(model_config, d)  # the pooled image feature
  if group_embeddings:
    flops += _projection_head_flops(model_config, d, rows=tokens)
  return flops


def text_forward_flops(model_config: Mapping[str, Any], context_length: int | None = None) -> int:
  """Forward FLOPs of encode_text on one text of `context_length` tokens (default the config's)."""
  t = _settings(TextTower, model_config.get('text'))
  length = context_length or t['context_length']
  blocks = t['depth'] * transformer_block_flops(length, t['width'], t['mlp_ratio'])
  return blocks + _projection_head_flops(model_config, t['width'])


def contrastive_logits_flops(
  model_config: Mapping[str, Any], texts_per_image: int = 4, global_batch: int = 4096
) -> int:
  """Forward FLOPs of one sample's rows of the contrastive logits against the global batch.

  As groupvit_jax/training/losses.py computes them, both directions are matmuls: the image
  against the B captions and the caption against the B images; the image against the B * K
  prompted nouns and each of its K prompts against the B images (K = texts_per_image - 1).
  """
  e = _settings(GroupViT, model_config)['embed_dim']
  prompts = texts_per_image - 1
  captions = 2 * _dense(1, e, global_batch)
  multi_label = _dense(1, e, global_batch * prompts) + _dense(prompts, e, global_batch)
  return captions + multi_label


def train_flops_per_sample(
  model_config: Mapping[str, Any],
  image_size: int | Sequence[int] = 224,
  texts_per_image: int = 4,
  global_batch: int = 4096,
) -> int:
  """Training FLOPs per sample: 3 x forward (the backward pass of a matmul costs two).

  One image, `texts_per_image` texts (the caption and the prompted nouns) and the sample's
  share of the contrastive logits. The convention counts an input gradient for every matmul,
  also where none is needed (the images'), which overstates the patch embedding slightly.
  """
  forward = (
    image_forward_flops(model_config, image_size)
    + texts_per_image * text_forward_flops(model_config)
    + contrastive_logits_flops(model_config, texts_per_image, global_batch)
  )
  return 3 * forward


def mfu(
  step_time_s: float,
  global_batch: int,
  flops_per_sample: float,
  peak_flops_per_chip: float,
  num_chips: int,
) -> float:
  """Model FLOPs utilisation: achieved training FLOP/s over the chips' combined peak."""
  return global_batch * flops_per_sample / (step_time_s * peak_flops_per_chip * num_chips)
