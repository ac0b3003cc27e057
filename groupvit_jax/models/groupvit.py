"""GroupViT: the image and text towers, their projection heads and the temperatures."""

import math
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from groupvit_jax.models import layers
from groupvit_jax.models.text import TextTower
from groupvit_jax.models.vision import VisionTower
from groupvit_jax.models.vit import ViTTower

MAX_LOGIT_SCALE = 100.0

# config.model.image_tower: the module config.model.vision configures.
IMAGE_TOWERS = {'groupvit': VisionTower, 'vit': ViTTower}


def image_tower_class(name: str) -> type[nn.Module]:
  """The image tower module for config.model.image_tower (IMAGE_TOWERS)."""
  if name not in IMAGE_TOWERS:
    raise ValueError(
      f'config.model.image_tower is {name!r}; expected one of {", ".join(IMAGE_TOWERS)}'
    )
  return IMAGE_TOWERS[name]


def l2_normalize(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class ProjectionHead(nn.Module):
  """The "2-layer MLP": Linear -> BatchNorm -> ReLU -> Linear (the checkpoints' 1x1 convs).

  In training the BatchNorm statistics are over all rows of `x`, i.e. the global batch when
  `x` is a globally sharded array under jit.
  """

  hidden_dim: int = 4096
  out_dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = layers.dense(self.hidden_dim, self.dtype, 'linear_hidden')(x)
    # PyTorch's momentum 0.1 is Flax's 0.9. (PyTorch keeps an unbiased running variance,
    # Flax a biased one: a relative 1/batch difference, irrelevant at batch 4096.)
    x = nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, name='bn'
    )(x)
    x = nn.relu(x)
    return layers.dense(self.out_dim, self.dtype, 'linear_out')(x)


class ImageOutput(NamedTuple):
  """encode_image's result.

  embedding: [B, E] L2-normalised image embedding.
  group_embeddings: [B, S_final, E] L2-normalised embedding of each final segment token; a
    ViT's groups are its patches, [B, N, E] (None in training, where projecting them would
    disturb the BatchNorm statistics).
  assignments: per grouping stage, grouping.Assignment(hard, soft), each [B, S_out, N_in];
    () for a ViT.
  grid: (H/p, W/p), the patch grid of the first stage's N_in tokens.
  """

  embedding: jax.Array
  group_embeddings: Any
  assignments: tuple
  grid: tuple


class GroupViT(nn.Module):
  """The two-tower GroupViT model.

  `image_tower` picks the image tower (IMAGE_TOWERS): 'groupvit' (VisionTower) or 'vit' (the
  plain ViT baseline, ViTTower). `vision` and `text` are the keyword arguments of that tower
  and of TextTower; `dtype` is the compute dtype ('float32' or 'bfloat16'); parameters are
  always float32. `remat` is the rematerialisation policy of the towers' blocks
  (layers.remat_policy: 'none', 'full', or a jax.checkpoint_policies name; bools as in older
  configs): less memory, more compute.
  `attention` picks the attention kernel (layers.attention_implementation: 'auto', 'xla',
  'cudnn').
  """

  vision: Mapping[str, Any]
  text: Mapping[str, Any]
  image_tower: str = 'groupvit'
  embed_dim: int = 256
  projection_hidden_dim: int = 4096
  dtype: str = 'float32'
  remat: str | bool = 'none'
  attention: str = 'auto'

  def setup(self):
    dtype = jnp.dtype(self.dtype)
    towers = dict(dtype=dtype, remat=self.remat, attention=self.attention)
    self.img_encoder = image_tower_class(self.image_tower)(**_tuples(self.vision), **towers)
    self.text_encoder = TextTower(**self.text, **towers)
    self.img_projector = ProjectionHead(self.projection_hidden_dim, self.embed_dim, dtype)
    self.text_projector = ProjectionHead(self.projection_hidden_dim, self.embed_dim, dtype)
    init_scale = nn.initializers.constant(math.log(1 / 0.07))
    self.logit_scale = self.param('logit_scale', init_scale, ())
    self.multi_label_logit_scale = self.param('multi_label_logit_scale', init_scale, ())

  def encode_image(self, images: jax.Array, train: bool = False) -> ImageOutput:
    """Normalised images [B, H, W, 3] (float, ImageNet mean/std) -> ImageOutput."""
    out = self.img_encoder(images, deterministic=not train)
    embedding = l2_normalize(self.img_projector(out.pooled, train))
    group_embeddings = None
    if not train:
      b, s, d = out.tokens.shape
      groups = self.img_projector(out.tokens.reshape(b * s, d), False)  # [B * S, E]
      group_embeddings = l2_normalize(groups).reshape(b, s, -1)
    return ImageOutput(embedding, group_embeddings, out.assignments, out.grid)

  def image_features(self, images: jax.Array) -> jax.Array:
    """Normalised images [B, H, W, 3] -> the image tower's pooled features [B, width], before
    the projection head (what CLIP's linear probes read)."""
    return self.img_encoder(images, deterministic=True).pooled

  def text_features(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Token ids [B, L] -> projected text features [B, E], not normalised. The released
    zero-shot classifiers average these over prompt templates, then normalise."""
    return self.text_projector(self.text_encoder(tokens, not train), train)

  def encode_text(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Token ids [B, L] -> L2-normalised text embeddings [B, E]."""
    return l2_normalize(self.text_features(tokens, train))

  def embed_for_training(self, images: jax.Array, tokens: jax.Array):
    """The training forward: images [B, H, W, 3] and, per image, T texts [B, T, L].

    Returns (image embeddings [B, E], text embeddings [B, T, E], (scale, multi-label scale)):
    project_for_training of the two backbones' features.
    """
    return self.project_for_training(self.image_backbone(images), self.text_backbone(tokens))

  def image_backbone(self, images: jax.Array) -> jax.Array:
    """Training image features before projection: images [B, H, W, 3] -> pooled [B, width],
    with Gumbel noise (rng 'gumbel') and drop path (rng 'dropout')."""
    return self.img_encoder(images, deterministic=False).pooled

  def text_backbone(self, tokens: jax.Array) -> jax.Array:
    """Training text features before projection: T texts per image [B, T, L] -> [B, T, width]."""
    b, t, length = tokens.shape
    return self.text_encoder(tokens.reshape(b * t, length), False).reshape(b, t, -1)

  def project_for_training(self, image: jax.Array, text: jax.Array):
    """The projection heads and temperatures on backbone features (image [B, Dv], text
    [B, T, Dt]) -> (image embeddings [B, E], text embeddings [B, T, E], (scale, multi-label
    scale)). BatchNorm statistics are over all rows given: the B images, and all B * T texts
    as in the released code."""
    b, t, width = text.shape
    image = l2_normalize(self.img_projector(image, True))
    text = l2_normalize(self.text_projector(text.reshape(b * t, width), True))  # [B * T, E]
    return image, text.reshape(b, t, -1), self.temperatures()

  def temperatures(self) -> tuple[jax.Array, jax.Array]:
    """The image-text and multi-label logit scales, exp(learned) clamped at 100."""

    def clamp(s):
      return jnp.minimum(jnp.exp(s), MAX_LOGIT_SCALE)

    return clamp(self.logit_scale), clamp(self.multi_label_logit_scale)

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
    """Both towers and the image-text logits: (ImageOutput, text embeddings, logits [Bi, Bt])."""
    image = self.encode_image(images, train)
    text = self.encode_text(tokens, train)
    scale, _ = self.temperatures()
    return image, text, scale * image.embedding @ text.T


def _tuples(config: Mapping[str, Any]) -> dict:
  """Lists (as JSON and ConfigDict give them) -> tuples, so module fields stay hashable."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def cls_attention(model: GroupViT, variables: Mapping[str, Any], images: jax.Array) -> jax.Array:
  """A class-token ViT's attention in its last block: normalised images [B, H, W, 3] -> each
  head's softmax weights from the class token to the patch tokens, float32 [B, heads, gh, gw]
  (the class token's weight on itself dropped, the rest not renormalised).

  ValueError for a GroupViT or a mean-pooled ViT, which have no class token.
  """
  tower = image_tower_class(model.image_tower)(**_tuples(model.vision))
  if not isinstance(tower, ViTTower) or tower.pooling != 'cls':
    raise ValueError(
      'class-token attention needs config.model.image_tower "vit" with pooling "cls"; this '
      f'model has image_tower {model.image_tower!r}'
      + (f' with pooling {tower.pooling!r}' if isinstance(tower, ViTTower) else '')
    )
  # A mutable 'intermediates' collection makes every SelfAttention sow its weights; only the
  # last block's leave this function, so jit drops the rest.
  out, state = model.apply(
    variables,
    images,
    method=lambda module, x: module.img_encoder(x, deterministic=True),
    mutable=['intermediates'],
  )
  block = state['intermediates']['img_encoder'][f'blocks_{tower.depth - 1}']['attn']
  (weights,) = block[layers.ATTENTION_WEIGHTS]  # [B, heads, 1 + N, 1 + N]
  return weights[:, :, 0, 1:].reshape(*weights.shape[:2], *out.grid)
