"""Transformer building blocks shared by the vision and text towers.

Parameter names follow the released checkpoints (``norm1``, ``attn.qkv``, ``attn.proj``,
``mlp.fc1`` ...) so that the weight converters stay a table of renames.
"""

from typing import Callable, Optional, Union

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


# config.model.attention: which kernel computes softmax(q k^T / sqrt(Dh)) v.
ATTENTION_CHOICES = ('auto', 'xla', 'cudnn')
# The input dtypes cuDNN's fused (flash) attention takes, and the head widths it takes on every
# GPU generation (a multiple of 8, at most 128; Hopper and later also take up to 256).
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
CUDNN_MAX_HEAD_DIM = 128


def default_platform() -> str:
  """The default JAX backend: 'cuda' for an NVIDIA GPU, 'rocm' for an AMD one, else
  jax.default_backend() ('cpu', 'tpu')."""
  backend = jax.default_backend()
  if backend == 'gpu':
    version = jax.devices()[0].client.platform_version.lower()
    return 'cuda' if 'cuda' in version else 'rocm'
  return backend


def check_attention(setting: str) -> None:
  """ValueError unless `setting` is one of ATTENTION_CHOICES."""
  if setting not in ATTENTION_CHOICES:
    raise ValueError(
      f'config.model.attention is {setting!r}; expected one of {", ".join(ATTENTION_CHOICES)}'
    )


def attention_implementation(
  setting: str, dtype, head_dim: int, platform: Optional[str] = None
) -> Optional[str]:
  """The `implementation` of jax.nn.dot_product_attention for config.model.attention.

  'xla' -> None (XLA's attention); 'cudnn' -> 'cudnn' (an error off NVIDIA GPUs); 'auto' ->
  'cudnn' when `platform` (default: the default JAX backend) is an NVIDIA GPU and the inputs
  qualify (bfloat16/float16, head_dim a multiple of 8 and at most CUDNN_MAX_HEAD_DIM), else
  None. The one place the attention kernel is chosen.
  """
  check_attention(setting)
  if setting == 'xla':
    return None
  platform = default_platform() if platform is None else platform
  if setting == 'cudnn':
    if platform != 'cuda':
      raise ValueError(
        f"config.model.attention='cudnn' needs an NVIDIA GPU, but the default JAX backend is "
        f"{platform!r}: use 'auto' or 'xla'"
      )
    if jnp.dtype(dtype) not in CUDNN_DTYPES:
      raise ValueError(
        f"config.model.attention='cudnn' needs bfloat16 or float16 inputs, got {jnp.dtype(dtype)}"
        " (set config.model.dtype='bfloat16', or use 'auto' or 'xla')"
      )
    return 'cudnn'
  eligible = (
    platform == 'cuda'
    and jnp.dtype(dtype) in CUDNN_DTYPES
    and head_dim % 8 == 0
    and head_dim <= CUDNN_MAX_HEAD_DIM
  )
  return 'cudnn' if eligible else None


def attend(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  num_heads: int,
  is_causal: bool = False,
  attention: str = 'auto',
) -> jax.Array:
  """Multi-head scaled dot-product attention.

  q: [B, Tq, D], k and v: [B, Tk, D] -> [B, Tq, D]. Heads are split off D; the softmax is
  computed in float32 whatever the input dtype. `attention` picks the kernel (see
  attention_implementation): cuDNN's fused attention or XLA's.
  """
  b, tq, d = q.shape
  head_dim = d // num_heads

  def split(t):
    return t.reshape(t.shape[0], t.shape[1], num_heads, head_dim)  # [B, T, H, Dh]

  implementation = attention_implementation(attention, q.dtype, head_dim)
  out = jax.nn.dot_product_attention(
    split(q), split(k), split(v), is_causal=is_causal, implementation=implementation
  )
  return out.reshape(b, tq, d)


def attention_weights(
  q: jax.Array, k: jax.Array, num_heads: int, is_causal: bool = False
) -> jax.Array:
  """The softmax attention weights that `attend` applies, float32 [B, H, Tq, Tk]:
  softmax(q k^T / sqrt(Dh)) per head, for q [B, Tq, D] and k [B, Tk, D]."""
  b, tq, d = q.shape
  tk, head_dim = k.shape[1], d // num_heads
  q = q.astype(jnp.float32).reshape(b, tq, num_heads, head_dim)  # [B, Tq, H, Dh]
  k = k.astype(jnp.float32).reshape(b, tk, num_heads, head_dim)  # [B, Tk, H, Dh]
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(jnp.float32(head_dim))
  if is_causal:
    logits = jnp.where(jnp.tril(jnp.ones((tq, tk), bool)), logits, -jnp.inf)
  return jax.nn.softmax(logits, axis=-1)


# The name under which SelfAttention sows its weights (see SelfAttention).
ATTENTION_WEIGHTS = 'attention_weights'


class SelfAttention(nn.Module):
  """Self-attention with one fused qkv projection (the checkpoints store it fused).

  Only when applied with the 'intermediates' collection mutable, it also sows its attention
  weights [B, H, T, T] (attention_weights) as ATTENTION_WEIGHTS: the fused kernels return
  none, so an ordinary forward computes nothing more.
  """

  num_heads: int
  is_causal: bool = False
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see attention_implementation

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    qkv = dense(3 * d, self.dtype, 'qkv')(x)  # [B, T, 3D], ordered q | k | v
    q, k, v = jnp.split(qkv, 3, axis=-1)
    if self.is_mutable_collection('intermediates'):
      weights = attention_weights(q, k, self.num_heads, self.is_causal)
      self.sow('intermediates', ATTENTION_WEIGHTS, weights)
    out = attend(q, k, v, self.num_heads, self.is_causal, self.attention)
    return dense(d, self.dtype, 'proj')(out)


class CrossAttention(nn.Module):
  """Queries attend to a separate key/value sequence (q, k, v projected separately)."""

  num_heads: int
  dtype: Dtype = jnp.float32
  attention: str = 'auto'  # see attention_implementation

  @nn.compact
  def __call__(self, query: jax.Array, key: jax.Array) -> jax.Array:
    d = query.shape[-1]
    q = dense(d, self.dtype, 'q_proj')(query)
    k = dense(d, self.dtype, 'k_proj')(key)
    v = dense(d, self.dtype, 'v_proj')(key)
    out = attend(q, k, v, self.num_heads, attention=self.attention)
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
  attention: str = 'auto'  # see attention_implementation

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    d = x.shape[-1]
    drop = DropPath(self.drop_path)
    y = SelfAttention(self.num_heads, self.is_causal, self.dtype, self.attention, name='attn')(
      layer_norm('norm1')(x)
    )
    x = x + drop(y, deterministic)
    y = Mlp(int(d * self.mlp_ratio), None, self.activation, self.dtype, name='mlp')(
      layer_norm('norm2')(x)
    )
    return x + drop(y, deterministic)


# config.model.remat: what a rematerialised block keeps for the backward pass. 'none' does not
# rematerialise; 'full' keeps only the block's inputs and recomputes everything else; the
# others are jax.checkpoint_policies of the same names (the dots ones keep matmul outputs).
REMAT_POLICIES = {
  'none': None,
  'full': None,
  'dots_saveable': jax.checkpoint_policies.dots_saveable,
  'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  'nothing_saveable': jax.checkpoint_policies.nothing_saveable,
  'everything_saveable': jax.checkpoint_policies.everything_saveable,
}


def remat_policy(remat: Union[str, bool]) -> str:
  """config.model.remat as a policy name: False -> 'none' and True -> 'full' (the values of
  configs and checkpoints written when it was a bool; also as the strings 'True' and 'False',
  which is what `--config.model.remat=True` gives now that the config's value is a string);
  other names must be REMAT_POLICIES'."""
  if isinstance(remat, bool):
    return 'full' if remat else 'none'
  if remat in ('True', 'False'):
    return 'full' if remat == 'True' else 'none'
  if not isinstance(remat, str) or remat not in REMAT_POLICIES:
    raise ValueError(
      f'config.model.remat is {remat!r}; expected one of {", ".join(REMAT_POLICIES)} '
      '(or a bool: False is none, True is full)'
    )
  return remat


def rematerialise(module: type[nn.Module], remat: Union[str, bool], static_argnums=()):
  """`module` wrapped in nn.remat with config.model.remat's policy; as is for 'none'.

  static_argnums counts the module itself as argument 0. The parameters and their names are
  the same either way.
  """
  name = remat_policy(remat)
  if name == 'none':
    return module
  return nn.remat(module, static_argnums=static_argnums, policy=REMAT_POLICIES[name])


def transformer_block(remat: Union[str, bool]) -> type[TransformerBlock]:
  """TransformerBlock, rematerialised with a config.model.remat policy (remat_policy).

  'full' trades about a third more compute for not storing each block's activations.
  """
  return rematerialise(TransformerBlock, remat, static_argnums=(2,))  # `deterministic`
