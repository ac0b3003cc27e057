"""An image tower with a 1x1 convolution head: the fully-supervised transfer baseline (Table 5).

The head is a Dense layer over the channels of per-patch features. A plain ViT tower gives
those directly (its tokens are the patches); a GroupViT tower ends with segment tokens, which go
back to the patches through the product of the stages' soft assignment maps: each patch's
feature is the assignment-weighted sum of the final segment tokens.
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from groupvit_jax.models import grouping, layers
from groupvit_jax.models.vision import VisionOutput


def image_tower(model: nn.Module, variables: Mapping[str, Any]) -> tuple[nn.Module, dict]:
  """The image tower of a two-tower model (groupvit.GroupViT's `img_encoder`, whichever tower
  class the config picks) as an unbound module, with its own variables."""
  tower, tower_variables = model.bind(variables).img_encoder.unbind()
  return tower, dict(tower_variables)


def patch_features(out: VisionOutput) -> jax.Array:
  """A tower's output -> per-patch features [B, gh, gw, D] on its patch grid."""
  tokens = out.tokens  # [B, N, D] patches (ViT) or [B, S, D] segments (GroupViT)
  if out.assignments:
    maps = grouping.patch_to_segment_maps([a.soft for a in out.assignments])  # [B, S, N]
    tokens = jnp.einsum('bsn,bsd->bnd', maps.astype(tokens.dtype), tokens)  # [B, N, D]
  b, n, d = tokens.shape
  gh, gw = (int(g) for g in out.grid)
  if n != gh * gw:
    raise ValueError(f'{n} patch tokens do not fill the {gh}x{gw} patch grid')
  return tokens.reshape(b, gh, gw, d)


class SegmentationModel(nn.Module):
  """`tower` (an image tower returning VisionOutput) then a 1x1 convolution to `num_classes`.

  Normalised images [B, H, W, 3] -> float32 logits [B, H/p, W/p, num_classes] on the patch
  grid. With `train`, the tower runs as in pre-training: drop path (rng 'dropout') and, in a
  GroupViT tower, Gumbel noise in the hard assignments (rng 'gumbel').
  """

  tower: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    features = patch_features(self.tower(images, deterministic=not train))
    logits = layers.dense(self.num_classes, features.dtype, 'head')(features)
    return logits.astype(jnp.float32)
