"""RandAugment 'rand-m9-mstd0.5-inc1', as timm 0.4.12 applies it in the released recipe.

  image = randaugment(image, rng)   # PIL RGB -> PIL RGB
  ops, args = draw(rng, width, height)  # the draws alone: int32 [2], float32 [2]
  image = apply(image, ops, args)       # what randaugment does with them

`draw` and `apply` split the op's random draws from its pixels, so that the pixels can be
computed elsewhere: input_pipeline/device_augment.py applies the same (ops, args) on the
accelerator.

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


def _affine(image: Image.Image, matrix) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=FILL)


def _enhance(enhancer) -> Callable:
  return lambda image, factor: enhancer(image).enhance(factor)


def posterize(image: Image.Image, bits: int) -> Image.Image:
  """Keeps the top `bits` (0 to 8) bits of every channel. At 0 bits the image is black, which
  is what Pillow 8 and 9 gave; Pillow 10 and later refuse 0 bits ('bits must be between or
  equal to 1 and 8'), and timm 0.4.12 asks for 0 at level 10."""
  mask = ~(2 ** (8 - bits) - 1) & 0xFF
  return image.point([i & mask for i in range(256)] * len(image.getbands()))


def _solarize_add(image: Image.Image, add: float) -> Image.Image:
  lut = [min(255, i + int(add)) if i < 128 else i for i in range(256)]
  return image.point(lut * len(image.getbands()))


# The ops, each on an RGB image and its argument (`argument`): degrees, bits, threshold, added
# value, enhancement factor, shear or translation in pixels; unused by the first three.
OPS = {
  'AutoContrast': lambda image, arg: ImageOps.autocontrast(image),
  'Equalize': lambda image, arg: ImageOps.equalize(image),
  'Invert': lambda image, arg: ImageOps.invert(image),
  'Rotate': lambda image, degrees: image.rotate(degrees, Image.BILINEAR, fillcolor=FILL),
  'PosterizeIncreasing': lambda image, bits: posterize(image, int(bits)),
  # Values at or above the threshold invert: 256 inverts none, 0 all.
  'SolarizeIncreasing': lambda image, threshold: ImageOps.solarize(image, int(threshold)),
  'SolarizeAdd': _solarize_add,
  'ColorIncreasing': _enhance(ImageEnhance.Color),
  'ContrastIncreasing': _enhance(ImageEnhance.Contrast),
  'BrightnessIncreasing': _enhance(ImageEnhance.Brightness),
  'SharpnessIncreasing': _enhance(ImageEnhance.Sharpness),
  'ShearX': lambda image, shear: _affine(image, (1, shear, 0, 0, 1, 0)),
  'ShearY': lambda image, shear: _affine(image, (1, 0, 0, shear, 1, 0)),
  'TranslateXRel': lambda image, pixels: _affine(image, (1, 0, pixels, 0, 1, 0)),
  'TranslateYRel': lambda image, pixels: _affine(image, (1, 0, 0, 0, 1, pixels)),
}
OP_NAMES = tuple(OPS)  # an op's index in a batch's 'ops' is its position here
# The ops whose argument takes a random sign.
SIGNED = frozenset(
  {
    'Rotate',
    'ColorIncreasing',
    'ContrastIncreasing',
    'BrightnessIncreasing',
    'SharpnessIncreasing',
    'ShearX',
    'ShearY',
    'TranslateXRel',
    'TranslateYRel',
  }
)


def argument(name: str, level: float, sign: int, width: int, height: int) -> float:
  """timm's argument of op `name` at `level` (0 to 10) with `sign` (+1 or -1, signed ops only)
  on a width x height image."""
  fraction = level / MAX_LEVEL
  sign = -1.0 if sign < 0 else 1.0
  if name == 'Rotate':
    return sign * fraction * 30.0
  if name == 'PosterizeIncreasing':
    return 4 - int(fraction * 4)  # 4 bits at level 0, 0 at level 10
  if name == 'SolarizeIncreasing':
    return 256 - int(fraction * 256)
  if name == 'SolarizeAdd':
    return int(fraction * 110)
  if name.endswith('Increasing'):  # Color, Contrast, Brightness, Sharpness: 0.1 to 1.9
    return max(0.1, 1.0 + sign * fraction * 0.9)
  if name in ('ShearX', 'ShearY'):
    return sign * fraction * 0.3
  if name == 'TranslateXRel':
    return sign * fraction * 0.45 * width
  if name == 'TranslateYRel':
    return sign * fraction * 0.45 * height
  return 0.0


def draw(
  rng: np.random.Generator,
  width: int,
  height: int,
  num_ops: int = 2,
  magnitude: float = 9.0,
  magnitude_std: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
  """One image's RandAugment: int32 [num_ops] op indices into OP_NAMES (-1 where the op is
  skipped) and float32 [num_ops] arguments, for a width x height image. The arguments are
  rounded to float32 so that the host and the device (input_pipeline/device_augment.py) apply
  the same ones and give the same pixels; every op is timm's to the bit at its argument."""
  ops = np.full(num_ops, -1, np.int32)
  args = np.zeros(num_ops, np.float32)
  for slot, index in enumerate(rng.choice(len(OP_NAMES), num_ops, replace=True)):
    if rng.random() >= 0.5:
      continue
    name = OP_NAMES[index]
    level = min(max(rng.normal(magnitude, magnitude_std), 0.0), MAX_LEVEL)
    sign = -1 if name in SIGNED and rng.random() < 0.5 else 1
    ops[slot], args[slot] = index, argument(name, level, sign, width, height)
  return ops, args


def apply(image: Image.Image, ops: np.ndarray, args: np.ndarray) -> Image.Image:
  """The ops `draw` gave, in order, on an RGB image."""
  for index, arg in zip(ops.tolist(), args.tolist()):
    if index >= 0:
      image = OPS[OP_NAMES[index]](image, arg)
  return image


def randaugment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """RandAugment 'rand-m9-mstd0.5-inc1' (see the module docstring) on an RGB image."""
  return apply(image, *draw(rng, *image.size))
