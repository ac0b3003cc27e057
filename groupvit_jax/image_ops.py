"""Image normalisation shared by training and inference (done on device, inside jit)."""

import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 RGB [..., 3] -> float32 with ImageNet mean and std on [0, 1] pixels."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
