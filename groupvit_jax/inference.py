"""The inference API: `groupvit_jax.load(path)` and the jitted encoders it returns."""

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from groupvit_jax import checkpoint, tokenizer
from groupvit_jax.image_ops import normalize_images
from groupvit_jax.models.groupvit import GroupViT, ImageOutput


def check_images(images: Any) -> np.ndarray:
  """Validates a uint8 RGB batch [N, H, W, 3] (one image [H, W, 3] is promoted)."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'expected uint8 RGB images [N, H, W, 3], got shape {images.shape}')
  if images.dtype != np.uint8:
    raise TypeError(
      f'expected uint8 RGB images (0..255), got dtype {images.dtype}; '
      'convert with np.asarray(image, np.uint8)'
    )
  return images


class GroupViTInference:
  """A loaded GroupViT with jitted encoders. Each new input shape compiles once."""

  def __init__(self, model_config: Mapping[str, Any], variables: Mapping[str, Any]):
    self.config = dict(model_config)
    self.model: GroupViT = checkpoint.build_model(model_config)
    self.variables = jax.device_put(variables)
    self.context_length = self.model.text.get('context_length', 77)
    self._image_fn = jax.jit(self._image_forward)
    self._text_fn = jax.jit(lambda v, t: self.model.apply(v, t, method=GroupViT.encode_text))

  def _image_forward(self, variables, images_uint8) -> ImageOutput:
    return self.model.apply(variables, normalize_images(images_uint8), method=GroupViT.encode_image)

  def image_outputs(self, images: Any) -> ImageOutput:
    """The full image-tower output (embeddings, group embeddings, assignment maps)."""
    return self._image_fn(self.variables, check_images(images))

  def encode_image(self, images: Any) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] (any H, W; not resized) -> L2-normalised float32 [N, E]."""
    return np.asarray(self.image_outputs(images).embedding)

  def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """A string or a list of strings -> L2-normalised float32 [N, E]."""
    tokens = tokenizer.tokenize(texts, self.context_length)
    return np.asarray(self._text_fn(self.variables, tokens))

  def logit_scale(self) -> float:
    """The image-text temperature the model was trained with (exp, clamped at 100)."""
    scale, _ = self.model.apply(self.variables, method=GroupViT.temperatures)
    return float(scale)


def load(path: str, dtype: str | None = None) -> GroupViTInference:
  """Loads a groupvit_jax checkpoint directory, an NVlabs `.pth`, or a Hugging Face directory.

  `dtype` overrides the compute dtype ('float32' or 'bfloat16', e.g. bfloat16 on GPU/TPU);
  parameters stay float32 either way.
  """
  from groupvit_jax import convert  # pylint: disable=g-import-not-at-top

  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist')
  if dtype not in (None, 'float32', 'bfloat16'):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  if checkpoint.is_checkpoint(path):
    model_config, variables = checkpoint.load(path)
  else:
    model_config, variables, _ = convert.convert(path)
  if dtype:
    model_config = dict(model_config, dtype=dtype)
  return GroupViTInference(model_config, variables)
