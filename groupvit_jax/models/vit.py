"""A plain ViT image tower, the paper's CLIP-trained baseline (Table 4): no grouping.

Patch embedding (no LayerNorm, as in ViT), a learned positional embedding interpolated to any
patch grid, an optional class token, pre-norm transformer blocks and a final LayerNorm. It
returns the GroupViT tower's VisionOutput, with the patch tokens as its "groups".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax.models import layers
from groupvit_jax.models.vision import PatchEmbed, VisionOutput, interpolate_pos_embed

# 'cls': the final class token is the image feature (CLIP, ViT); 'mean': the patch tokens' mean.
POOLINGS = ('cls', 'mean')


class ViTTower(nn.Module):
  """ViT image encoder on normalised images [B, H, W, 3] of any size -> VisionOutput.

  tokens: the final LayerNorm'ed patch tokens [B, N, D] (class token excluded); pooled: the
  class token ('cls') or the patch tokens' mean ('mean'), [B, D]; assignments: (); grid:
  (H/p, W/p). With 'mean' there is no class token. The class token has no positional
  embedding of its own: a learned one would only add a constant to it.
  """

  image_size: int = 224
  patch_size: int = 16
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1  # linear from 0 over the blocks
  pooling: str = 'cls'
  dtype: jnp.dtype = jnp.float32
  remat: str | bool = 'none'  # layers.remat_policy
  attention: str = 'auto'  # the attention kernel (layers.attention_implementation)

  def _check(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f'pooling is {self.pooling!r}; expected one of {", ".join(POOLINGS)}')
    if self.depth < 1:
      raise ValueError(f'depth must be at least 1, got {self.depth}')
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')

  @nn.compact
  def __call__(self, images: jax.Array, deterministic: bool = True) -> VisionOutput:
    self._check()
    embed = PatchEmbed(self.patch_size, self.width, self.dtype, norm=False, name='patch_embed')
    x, grid = embed(images)  # [B, N, D]
    base_grid = (self.image_size // self.patch_size,) * 2
    pos_embed = self.param(
      'pos_embed', layers.dense_init, (base_grid[0] * base_grid[1], self.width)
    )
    x = x + interpolate_pos_embed(pos_embed, base_grid, grid)[None]
    if self.pooling == 'cls':
      cls_token = self.param('cls_token', layers.dense_init, (self.width,))
      cls_tokens = jnp.broadcast_to(cls_token.astype(x.dtype), (x.shape[0], 1, self.width))
      x = jnp.concatenate([cls_tokens, x], axis=1)  # [B, 1 + N, D]

    drop_path = np.linspace(0, self.drop_path_rate, self.depth).tolist()
    for i in range(self.depth):
      x = layers.transformer_block(self.remat)(
        self.num_heads,
        self.mlp_ratio,
        layers.gelu,
        drop_path=drop_path[i],
        dtype=self.dtype,
        attention=self.attention,
        name=f'blocks_{i}',
      )(x, deterministic)

    x = layers.layer_norm('norm')(x)
    if self.pooling == 'mean':
      return VisionOutput(x, x.mean(axis=1), (), grid)
    return VisionOutput(x[:, 1:], x[:, 0], (), grid)
