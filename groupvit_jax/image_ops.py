"""Image checks and normalisation shared by training and inference."""

from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images):
  """uint8 RGB [..., 3] (a jax or NumPy array) -> float32 with ImageNet mean and std on
  [0, 1] pixels. NumPy constants keep this module free of JAX for the input pipeline."""
  x = images.astype(np.float32) / np.float32(255.0)
  return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


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


def check_image(image: Any) -> np.ndarray:
  """Validates one uint8 RGB image [H, W, 3]; returns it as a batch of one [1, H, W, 3]."""
  if np.ndim(image) != 3:
    raise ValueError(f'expected one uint8 RGB image [H, W, 3], got shape {np.shape(image)}')
  return check_images(image)
