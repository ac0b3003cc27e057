"""The GroupViT image tower: patch embedding, grouping stages, final segment tokens."""

from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax import interpolation
from groupvit_jax.models import grouping, layers


def interpolate_pos_embed(
  pos_embed: jax.Array, grid: tuple[int, int], new_grid: tuple[int, int]
) -> jax.Array:
  """Resizes a [gh*gw, D] positional embedding to a new patch grid with torch's bicubic."""
  if tuple(grid) == tuple(new_grid):
    return pos_embed
  d = pos_embed.shape[-1]
  pos = pos_embed.reshape(grid[0], grid[1], d)  # [gh, gw, D]
  pos = interpolation.resize(pos, new_grid, 'bicubic', axes=(0, 1))  # [gh', gw', D]
  return pos.reshape(new_grid[0] * new_grid[1], d)


class PatchEmbed(nn.Module):
  """Non-overlapping patches -> linear embedding -> LayerNorm (GroupViT's; `norm=False`: none,
  as in a plain ViT).

  images: [B, H, W, 3] -> ([B, H/p * W/p, D], (H/p, W/p)). Trailing rows and columns that do
  not fill a patch are dropped, as a stride-p convolution without padding does.
  """

  patch_size: int
  width: int
  dtype: jnp.dtype = jnp.float32
  norm: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
    p = self.patch_size
    b, h, w, c = images.shape
    gh, gw = h // p, w // p
    if gh == 0 or gw == 0:
      raise ValueError(f'images of {h}x{w} pixels are smaller than one {p}x{p} patch')
    kernel = self.param('kernel', layers.dense_init, (p, p, c, self.width))
    bias = self.param('bias', nn.initializers.zeros, (self.width,))
    patches = images[:, : gh * p, : gw * p].reshape(b, gh, p, gw, p, c)  # [B, gh, p, gw, p, C]
    x = jnp.einsum('bhpwqc,pqcd->bhwd', patches.astype(self.dtype), kernel.astype(self.dtype))
    x = (x + bias.astype(self.dtype)).reshape(b, gh * gw, self.width)
    return (layers.layer_norm('norm')(x) if self.norm else x), (gh, gw)


class GroupingStage(nn.Module):
  """Transformer blocks over [image tokens; group tokens], then an optional grouping block.

  Group tokens are appended after the image tokens. A stage after the first adds a
  projection of the previous stage's group tokens to its own learned group tokens.
  """

  depth: int
  num_heads: int
  num_group_tokens: int
  num_output_groups: int
  mlp_ratio: float
  drop_path: Sequence[float]
  hard_assignment: bool
  gumbel: bool
  gumbel_tau: float
  assign_eps: float
  dtype: jnp.dtype = jnp.float32
  remat: str | bool = 'none'  # layers.remat_policy
  assign_scale: float = 1.0
  attention: str = 'auto'  # layers.attention_implementation

  @nn.compact
  def __call__(
    self, x: jax.Array, prev_group_tokens: Optional[jax.Array], deterministic: bool = True
  ):
    b, n, d = x.shape
    group_tokens = None
    if self.num_group_tokens:
      # Stage 1's tokens start trunc-normal, later stages' at zero (they add a projection).
      init = nn.initializers.zeros if prev_group_tokens is not None else layers.dense_init
      group_tokens = self.param('group_token', init, (self.num_group_tokens, d))
      group_tokens = jnp.broadcast_to(group_tokens, (b, self.num_group_tokens, d))
      if prev_group_tokens is not None:
        projector = layers.Mlp(
          d // 2, self.num_group_tokens, dtype=self.dtype, name='group_projector_mlp'
        )
        group_tokens = group_tokens + layers.mix_tokens(
          projector, layers.layer_norm('group_projector_norm')(prev_group_tokens)
        )
      x = jnp.concatenate([x, group_tokens.astype(x.dtype)], axis=1)  # [B, N + S, D]

    for i in range(self.depth):
      x = layers.transformer_block(self.remat)(
        self.num_heads,
        self.mlp_ratio,
        layers.gelu,
        drop_path=self.drop_path[i],
        dtype=self.dtype,
        attention=self.attention,
        name=f'blocks_{i}',
      )(x, deterministic)

    if group_tokens is None:
      return x, None, None
    x, group_tokens = x[:, :n], x[:, n:]
    # static_argnums: `deterministic` (the module itself is argument 0).
    grouping_block = layers.rematerialise(grouping.GroupingBlock, self.remat, static_argnums=(3,))
    x, assignment = grouping_block(
      self.num_output_groups,
      self.num_heads,
      self.mlp_ratio,
      hard=self.hard_assignment,
      gumbel=self.gumbel,
      gumbel_tau=self.gumbel_tau,
      assign_eps=self.assign_eps,
      dtype=self.dtype,
      assign_scale=self.assign_scale,
      attention=self.attention,
      name='downsample',
    )(x, group_tokens, deterministic)
    return x, group_tokens, assignment


class VisionOutput(NamedTuple):
  """What the image tower returns.

  tokens: [B, S_final, D], the final segment tokens after the last LayerNorm.
  pooled: [B, D], their mean (the image feature before projection).
  assignments: one grouping.Assignment per grouping stage, [B, S_out, N_in] each.
  grid: (H/p, W/p), the patch grid the first assignment's N_in tokens lie on.
  """

  tokens: jax.Array
  pooled: jax.Array
  assignments: tuple
  grid: tuple


class VisionTower(nn.Module):
  """GroupViT image encoder on normalised images [B, H, W, 3] of any size."""

  image_size: int = 224
  patch_size: int = 16
  width: int = 384
  depths: Sequence[int] = (6, 3, 3)
  num_heads: int = 6
  mlp_ratio: float = 4.0
  num_group_tokens: Sequence[int] = (64, 8, 0)
  num_output_groups: Sequence[int] = (64, 8)
  hard_assignment: bool = True
  gumbel: bool = True
  gumbel_tau: float = 1.0
  assign_eps: float = 1.0
  # Multiplies the assignment logits; 1 is the released model (see grouping.AssignAttention).
  assign_scale: float = 1.0
  drop_path_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32
  # Rematerialisation policy of the transformer and grouping blocks (layers.remat_policy).
  remat: str | bool = 'none'
  attention: str = 'auto'  # the attention kernel (layers.attention_implementation)

  def _check(self):
    grouping_stages = [s for s in self.num_group_tokens if s]
    if len(self.num_group_tokens) != len(self.depths):
      raise ValueError(
        f'num_group_tokens {tuple(self.num_group_tokens)} needs one entry per '
        f'stage of depths {tuple(self.depths)}'
      )
    if len(self.num_output_groups) != len(grouping_stages):
      raise ValueError(
        f'num_output_groups {tuple(self.num_output_groups)} needs one entry per '
        f'stage with group tokens {tuple(self.num_group_tokens)}'
      )
    if any(self.num_group_tokens[len(grouping_stages) :]) or not grouping_stages:
      raise ValueError(
        'stages with group tokens must come first and there must be at least '
        f'one; got num_group_tokens {tuple(self.num_group_tokens)}'
      )
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}')

  @nn.compact
  def __call__(self, images: jax.Array, deterministic: bool = True) -> VisionOutput:
    self._check()
    x, grid = PatchEmbed(self.patch_size, self.width, self.dtype, name='patch_embed')(images)
    base_grid = (self.image_size // self.patch_size,) * 2
    pos_embed = self.param(
      'pos_embed', layers.dense_init, (base_grid[0] * base_grid[1], self.width)
    )
    x = x + interpolate_pos_embed(pos_embed, base_grid, grid)[None]

    drop_path = np.linspace(0, self.drop_path_rate, sum(self.depths)).tolist()
    group_tokens, assignments = None, []
    for i, depth in enumerate(self.depths):
      first = sum(self.depths[:i])
      n_out = self.num_output_groups[i] if self.num_group_tokens[i] else 0
      x, group_tokens, assignment = GroupingStage(
        depth=depth,
        num_heads=self.num_heads,
        num_group_tokens=self.num_group_tokens[i],
        num_output_groups=n_out,
        mlp_ratio=self.mlp_ratio,
        drop_path=tuple(drop_path[first : first + depth]),
        hard_assignment=self.hard_assignment,
        gumbel=self.gumbel,
        gumbel_tau=self.gumbel_tau,
        assign_eps=self.assign_eps,
        dtype=self.dtype,
        remat=self.remat,
        assign_scale=self.assign_scale,
        attention=self.attention,
        name=f'layers_{i}',
      )(x, group_tokens, deterministic)
      if assignment is not None:
        assignments.append(assignment)

    tokens = layers.layer_norm('norm')(x)
    return VisionOutput(tokens, tokens.mean(axis=1), tuple(assignments), grid)
