"""RandAugment 'rand-m9-mstd0.5-inc1', as timm 0.4.12 applies it in the released recipe.

  image = randaugment(image, rng)   # PIL RGB -> PIL RGB

Two ops are drawn with replacement from the 'increasing' set (`OPS`); each is applied with
probability 0.5 at a magnitude drawn from N(9, 0.5) and clipped to [0, 10]; signed ops flip
their sign with probability 0.5. Geometric ops resample bilinearly (the recipe's
interpolation) and fill uncovered pixels with the ImageNet mean in uint8, as timm's
`transforms_imagenet_train` passes them.

Every op gives, at every level in [0, 10], the image timm's op gives under the Pillow of the
released environment (8 or 9). Where today's Pillow behaves differently, the op says so; the
tests compare each op at levels 0, 0.5, ..., 10 against an independent NumPy computation.
"""

from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from groupvit_jax.image_ops import IMAGENET_MEAN

MAX_LEVEL = 10.0
# The fill of geometric ops: the ImageNet mean in uint8, (124, 116, 104).
FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)


def _signed(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() < 0.5 else value


def _affine(image: Image.Image, matrix) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=FILL)


def _shear_x(image, level, rng):
  return _affine(image, (1, _signed(level / MAX_LEVEL * 0.3, rng), 0, 0, 1, 0))


def _shear_y(image, level, rng):
  return _affine(image, (1, 0, 0, _signed(level / MAX_LEVEL * 0.3, rng), 1, 0))


def _translate_x(image, level, rng):
  return _affine(image, (1, 0, _signed(level / MAX_LEVEL * 0.45, rng) * image.size[0], 0, 1, 0))


def _translate_y(image, level, rng):
  return _affine(image, (1, 0, 0, 0, 1, _signed(level / MAX_LEVEL * 0.45, rng) * image.size[1]))


def _rotate(image, level, rng):
  degrees = _signed(level / MAX_LEVEL * 30.0, rng)
  return image.rotate(degrees, Image.BILINEAR, fillcolor=FILL)


def _enhance(enhancer) -> Callable:
  # 1 +- 0.9 level / 10, kept >= 0.1: from 0.1 to 1.9.
  def op(image, level, rng):
    return enhancer(image).enhance(max(0.1, 1.0 + _signed(level / MAX_LEVEL * 0.9, rng)))

  return op


def posterize(image: Image.Image, bits: int) -> Image.Image:
  """Keeps the top `bits` (0 to 8) bits of every channel. At 0 bits the image is black, which
  is what Pillow 8 and 9 gave; Pillow 10 and later refuse 0 bits ('bits must be between or
  equal to 1 and 8'), and timm 0.4.12 asks for 0 at level 10."""
  mask = ~(2 ** (8 - bits) - 1) & 0xFF
  return image.point([i & mask for i in range(256)] * len(image.getbands()))


def _posterize(image, level, rng):
  del rng
  return posterize(image, 4 - int(level / MAX_LEVEL * 4))  # 4 bits at level 0, 0 at level 10


def _solarize(image, level, rng):
  del rng
  # Values at or above the threshold invert: 256 (none) at level 0, 0 (all) at level 10.
  return ImageOps.solarize(image, 256 - int(level / MAX_LEVEL * 256))


def _solarize_add(image, level, rng):
  del rng
  add = int(level / MAX_LEVEL * 110)
  lut = [min(255, i + add) if i < 128 else i for i in range(256)]
  return image.point(lut * len(image.getbands()))


OPS = {
  'AutoContrast': lambda image, level, rng: ImageOps.autocontrast(image),
  'Equalize': lambda image, level, rng: ImageOps.equalize(image),
  'Invert': lambda image, level, rng: ImageOps.invert(image),
  'Rotate': _rotate,
  'PosterizeIncreasing': _posterize,
  'SolarizeIncreasing': _solarize,
  'SolarizeAdd': _solarize_add,
  'ColorIncreasing': _enhance(ImageEnhance.Color),
  'ContrastIncreasing': _enhance(ImageEnhance.Contrast),
  'BrightnessIncreasing': _enhance(ImageEnhance.Brightness),
  'SharpnessIncreasing': _enhance(ImageEnhance.Sharpness),
  'ShearX': _shear_x,
  'ShearY': _shear_y,
  'TranslateXRel': _translate_x,
  'TranslateYRel': _translate_y,
}
_OP_NAMES = tuple(OPS)


def randaugment(
  image: Image.Image,
  rng: np.random.Generator,
  num_ops: int = 2,
  magnitude: float = 9.0,
  magnitude_std: float = 0.5,
) -> Image.Image:
  """RandAugment 'rand-m9-mstd0.5-inc1' (see the module docstring) on an RGB image."""
  for name in rng.choice(_OP_NAMES, num_ops, replace=True):
    if rng.random() >= 0.5:
      continue
    level = min(max(rng.normal(magnitude, magnitude_std), 0.0), MAX_LEVEL)
    image = OPS[name](image, level, rng)
  return image
