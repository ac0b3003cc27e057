"""The grouping block: merges image-segment tokens into fewer, learned groups.

Order of operations (docs/released_model.md, "Grouping block"):
  1. LayerNorm on the group tokens (norm_tokens) and on the image tokens (norm_x).
  2. Token-mixing MLP from S_in group tokens to S_out output tokens, then norm_post_tokens.
  3. Post-norm cross-attention block: the projected tokens attend to the image tokens.
  4. Assignment attention: each image token picks one group (softmax over the GROUP axis,
     Gumbel noise and straight-through hard one-hot in training), groups average their
     tokens with A / (sum_tokens A + assign_eps).
  5. Residual MLP on the merged tokens.
"""

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from groupvit_jax.models import layers


def straight_through_one_hot(soft: jax.Array, axis: int) -> jax.Array:
  """One-hot of argmax(soft) in the forward pass, with the gradient of `soft`.

  Written as hard + (soft - sg(soft)) rather than hard - sg(soft) + soft, so that the forward
  value is exactly one-hot: x - x is exactly 0 in floating point, 1 - s + s is not always 1.
  """
  index = jnp.argmax(soft, axis=axis)
  hard = jax.nn.one_hot(index, soft.shape[axis], axis=axis, dtype=soft.dtype)
  return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_softmax(
  logits: jax.Array, rng: jax.Array, axis: int, tau: float = 1.0, hard: bool = True
) -> jax.Array:
  """Gumbel-softmax over `axis`; straight-through one-hot when `hard`."""
  gumbels = jax.random.gumbel(rng, logits.shape, jnp.float32)
  soft = jax.nn.softmax((logits + gumbels) / tau, axis=axis)
  return straight_through_one_hot(soft, axis) if hard else soft


class Assignment(NamedTuple):
  """A grouping block's assignment of input tokens to output groups, each [B, S_out, N_in].

  `hard` is what the block used to merge tokens (one-hot over groups at inference; Gumbel
  noise in training when enabled); `soft` is the noise-free softmax, used for segmentation.
  """

  hard: jax.Array
  soft: jax.Array


class AssignAttention(nn.Module):
  """Single-head attention whose softmax runs over the query (group) axis.

  The logits are q.k / sqrt(D) times `assign_scale` (1 in the released model). A larger scale
  lets a small, briefly trained model's assignments outgrow the Gumbel noise.
  """

  hard: bool = True
  gumbel: bool = True
  gumbel_tau: float = 1.0
  assign_eps: float = 1.0
  dtype: jnp.dtype = jnp.float32
  assign_scale: float = 1.0

  @nn.compact
  def __call__(
    self, groups: jax.Array, tokens: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, Assignment]:
    d = groups.shape[-1]
    q = layers.dense(d, self.dtype, 'q_proj')(groups)  # [B, S, D]
    k = layers.dense(d, self.dtype, 'k_proj')(tokens)  # [B, N, D]
    v = layers.dense(d, self.dtype, 'v_proj')(tokens)  # [B, N, D]
    scale = self.assign_scale * d**-0.5
    logits = jnp.einsum('bsd,bnd->bsn', q, k, preferred_element_type=jnp.float32) * scale

    group_axis = -2
    soft = jax.nn.softmax(logits, axis=group_axis)
    if self.gumbel and not deterministic:
      assign = gumbel_softmax(
        logits, self.make_rng('gumbel'), group_axis, self.gumbel_tau, self.hard
      )
    elif self.hard:
      assign = straight_through_one_hot(soft, group_axis)
    else:
      assign = soft
    # Each group averages the tokens it won; the +assign_eps (1, not a small epsilon) is the
    # released model's and damps groups that won few tokens.
    weights = assign / (jnp.sum(assign, axis=-1, keepdims=True) + self.assign_eps)
    out = jnp.einsum('bsn,bnd->bsd', weights.astype(v.dtype), v)
    out = layers.dense(d, self.dtype, 'proj')(out)
    return out, Assignment(hard=assign, soft=soft)


class CrossAttentionBlock(nn.Module):
  """Post-norm cross-attention block: norm_post(x + mlp(norm2(x + attn(x, key))))."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  attention: str = 'auto'  # layers.attention_implementation

  @nn.compact
  def __call__(self, query: jax.Array, key: jax.Array) -> jax.Array:
    d = query.shape[-1]
    attn = layers.CrossAttention(self.num_heads, self.dtype, self.attention, name='attn')
    x = query + attn(query, key)
    x = x + layers.Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp')(
      layers.layer_norm('norm2')(x)
    )
    return layers.layer_norm('norm_post')(x)


class GroupingBlock(nn.Module):
  """Groups N image tokens into `num_output_groups` tokens using S_in group tokens.

  tokens: [B, N, D], group_tokens: [B, S_in, D] -> ([B, S_out, D], Assignment).
  """

  num_output_groups: int
  num_heads: int
  mlp_ratio: float = 4.0
  tokens_mlp_ratio: float = 0.5
  hard: bool = True
  gumbel: bool = True
  gumbel_tau: float = 1.0
  assign_eps: float = 1.0
  dtype: jnp.dtype = jnp.float32
  assign_scale: float = 1.0
  attention: str = 'auto'  # the cross-attention's kernel: layers.attention_implementation

  @nn.compact
  def __call__(
    self, tokens: jax.Array, group_tokens: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, Assignment]:
    d = tokens.shape[-1]
    group_tokens = layers.layer_norm('norm_tokens')(group_tokens)
    tokens = layers.layer_norm('norm_x')(tokens)

    mlp_inter = layers.Mlp(
      int(d * self.tokens_mlp_ratio), self.num_output_groups, dtype=self.dtype, name='mlp_inter'
    )
    groups = layers.mix_tokens(mlp_inter, group_tokens)  # [B, S_out, D]
    groups = layers.layer_norm('norm_post_tokens')(groups)
    groups = CrossAttentionBlock(
      self.num_heads, self.mlp_ratio, self.dtype, self.attention, name='pre_assign_attn'
    )(groups, tokens)

    merged, assignment = AssignAttention(
      hard=self.hard,
      gumbel=self.gumbel,
      gumbel_tau=self.gumbel_tau,
      assign_eps=self.assign_eps,
      dtype=self.dtype,
      assign_scale=self.assign_scale,
      name='assign',
    )(groups, tokens, deterministic)
    x = merged + groups
    # In and out widths are equal in every released model, so the reduction is the identity.
    x = x + layers.Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp_channels')(
      layers.layer_norm('norm_new_x')(x)
    )
    return x, assignment


def patch_to_segment_maps(assignments_soft: Sequence[jax.Array]) -> jax.Array:
  """Per-stage soft maps [B, S_out, N_in] -> their product [B, S_last, N]: how much each of
  the N patches belongs to each final segment. Each column sums to 1 (the maps are softmaxes
  over the segment axis)."""
  maps = assignments_soft[0]  # [B, S_1, N]
  for stage in assignments_soft[1:]:
    maps = jnp.einsum('bts,bsn->btn', stage, maps)  # [B, S_next, N]
  return maps
