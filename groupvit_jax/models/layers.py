"""Transformer building blocks shared by the vision and text towers.

Parameter names follow the released checkpoints (``norm1``, ``attn.qkv``, ``attn.proj``,
``mlp.fc1`` ...) so that the weight converters stay a table of renames.
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype

# Linear layers: trunc-normal(0.02) weights and zero biases, as the released code initialises.
dense_init = nn.initializers.truncated_normal(stddev=0.02)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as torch.nn.GELU() in the vision tower."""
  return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
  """CLIP's QuickGELU, x * sigmoid(1.702 x), used in the text tower."""
  return x * jax.nn.sigmoid(1.702 * x)


def layer_norm(name: str) -> nn.LayerNorm:
  """LayerNorm with PyTorch's eps; statistics are always computed in float32."""
  return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=name)


def dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, kernel_init=dense_init, name=name)


class Mlp(nn.Module):
  """Linear -> activation -> Linear on the last axis."""

  hidden_dim: int
  out_dim: Optional[int] = None
  activation: Callable[[jax.Array], jax.Array] = gelu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    x = dense(self.hidden_dim, self.dtype, 'fc1')(x)
    x = self.activation(x)
    return dense(out_dim, self.dtype, 'fc2')(x)


def mix_tokens(mlp: Mlp, x: jax.Array) -> jax.Array:
  """Applies `mlp` across the token axis: [B, T_in, D] -> [B, T_out, D]."""
  return jnp.swapaxes(mlp(jnp.swapaxes(x, 1, 2)), 1, 2)  # via [B, D, T_in] -> [B, D, T_out]


def attend(
  q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int, is_causal: bool = False
) -> jax.Array:
  """Multi-head scaled dot-product attention.

  q: [B, Tq, D], k and v: [B, Tk, D] -> [B, Tq, D]. Heads are split off D; the softmax is
  computed in float32 whatever the input dtype.
  """
  b, tq, d = q.shape
  head_dim = d // num_heads

  def split(t):
    return t.reshape(t.shape[0], t.shape[1], num_heads, head_dim)  # [B, T, H, Dh]

  out = jax.nn.dot_product_attention(split(q), split(k), split(v), is_causal=is_causal)
  return out.reshape(b, tq, d)


class SelfAttention(nn.Module):
  """Self-attention with one fused qkv projection (the checkpoints store it fused)."""

  num_heads: int
  is_causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    qkv = dense(3 * d, self.dtype, 'qkv')(x)  # [B, T, 3D], ordered q | k | v
    q, k, v = jnp.split(qkv, 3, axis=-1)
    out = attend(q, k, v, self.num_heads, self.is_causal)
    return dense(d, self.dtype, 'proj')(out)


class CrossAttention(nn.Module):
  """Queries attend to a separate key/value sequence (q, k, v projected separately)."""

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query: jax.Array, key: jax.Array) -> jax.Array:
    d = query.shape[-1]
    q = dense(d, self.dtype, 'q_proj')(query)
    k = dense(d, self.dtype, 'k_proj')(key)
    v = dense(d, self.dtype, 'v_proj')(key)
    out = attend(q, k, v, self.num_heads)
    return dense(d, self.dtype, 'proj')(out)


class DropPath(nn.Module):
  """Stochastic depth: zero a sample's residual branch with probability `rate` (rng 'dropout')."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class TransformerBlock(nn.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  num_heads: int
  mlp_ratio: float = 4.0
  activation: Callable[[jax.Array], jax.Array] = gelu
  is_causal: bool = False
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    d = x.shape[-1]
    drop = DropPath(self.drop_path)
    y = SelfAttention(self.num_heads, self.is_causal, self.dtype, name='attn')(
      layer_norm('norm1')(x)
    )
    x = x + drop(y, deterministic)
    y = Mlp(int(d * self.mlp_ratio), None, self.activation, self.dtype, name='mlp')(
      layer_norm('norm2')(x)
    )
    return x + drop(y, deterministic)


def transformer_block(remat: bool) -> type[TransformerBlock]:
  """TransformerBlock, rematerialised (activations recomputed in the backward pass) if asked.

  Remat trades about a third more compute for not storing each block's activations; the
  parameters and their names are the same either way.
  """
  # static_argnums counts the module itself as argument 0: `deterministic` is static.
  return nn.remat(TransformerBlock, static_argnums=(2,)) if remat else TransformerBlock
