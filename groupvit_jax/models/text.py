"""The CLIP-style text tower: causal transformer, pooled at the end-of-text token."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from groupvit_jax.models import layers


class TextTower(nn.Module):
  """Token ids [B, L] (CLIP BPE, zero padded) -> pooled text feature [B, width]."""

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 256
  depth: int = 12
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  # Rematerialisation policy of the transformer blocks (layers.remat_policy; bools allowed).
  remat: str | bool = 'none'
  attention: str = 'auto'  # the attention kernel (layers.attention_implementation)

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
    if tokens.shape[-1] > self.context_length:
      raise ValueError(
        f'token sequences of length {tokens.shape[-1]} exceed the context '
        f'length {self.context_length}'
      )
    embed = nn.Embed(
      self.vocab_size,
      self.width,
      embedding_init=nn.initializers.normal(0.02),
      name='token_embedding',
    )
    pos = self.param(
      'positional_embedding', nn.initializers.normal(0.01), (self.context_length, self.width)
    )
    x = embed(tokens) + pos[: tokens.shape[-1]]  # [B, L, width]
    for i in range(self.depth):
      x = layers.transformer_block(self.remat)(
        self.num_heads,
        self.mlp_ratio,
        layers.quick_gelu,
        is_causal=True,
        dtype=self.dtype,
        attention=self.attention,
        name=f'resblocks_{i}',
      )(x, deterministic)
    x = layers.layer_norm('ln_final')(x)
    # The end-of-text token has the largest id in CLIP's vocabulary, so argmax finds it.
    eot = jnp.argmax(tokens, axis=-1)
    return jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
