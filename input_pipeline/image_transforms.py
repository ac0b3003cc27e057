"""Image decoding and the released recipe's train transform, on the host.

  image = decode(data)                      # PIL RGB, or DamagedImage(reason)
  out = train_transform(data, rng, cfg)     # {'image': uint8 [224, 224, 3], 'augment': ...}

The transform is timm's `create_transform` as GroupViT calls it, re-implemented on Pillow:
RandomResizedCrop 224 (scale (0.08, 1), ratio (3/4, 4/3), bilinear), horizontal flip p 0.5 and
the DeiT set: RandAugment 'rand-m9-mstd0.5-inc1' and random erasing p 0.25 in 'pixel' mode.
timm applies colour jitter only when no RandAugment is given, so the released runs trained
without it; `TransformConfig.colour_jitter` turns it on explicitly. ImageNet normalisation
happens on the device (groupvit_jax.image_ops); random erasing therefore paints the uint8
pixels that normalise to N(0, 1) noise, as timm's erasing does after normalisation.

Where the work is done. The host decodes and crops; flip, RandAugment and erasing are drawn on
the host (`augment_params`, a few numbers per image) and, with `augment_on_device` (the
default), applied to the batch in the train step by input_pipeline/device_augment.py, which
gives the pixels `augment_on_host` gives from the same draws (the erasing noise aside: the
same distribution, another generator). Without it the host applies them and 'augment' is absent.

Speed: the crop box is drawn from the header's size before decoding, so a JPEG decodes at the
smallest DCT scale (1/2, 1/4, 1/8) that still gives the crop 224 pixels (`Image.draft`), and
crop and resize are one `Image.resize(box=...)`.
"""

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageEnhance

from groupvit_jax.image_ops import IMAGENET_MEAN, IMAGENET_STD
from input_pipeline import randaugment


class DamagedImage(Exception):
  """An image that cannot be used; `reason` is one of webdataset.SKIP_REASONS."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """The train transform. The defaults are the released recipe."""

  image_size: int = 224
  min_scale: float = 0.08
  randaugment: bool = True  # 'rand-m9-mstd0.5-inc1'
  random_erasing: float = 0.25
  colour_jitter: float = 0.0  # brightness, contrast and saturation; timm's 0.4 is off with RA
  dct_scaling: bool = True  # decode JPEGs at a reduced DCT scale when the crop allows
  augment_on_device: bool = True  # flip, RandAugment and erasing applied in the train step
  # Images with more pixels are skipped as 'image_too_large' before they are decoded.
  max_pixels: int = 8192 * 8192

  def __post_init__(self):
    if self.colour_jitter and self.augment_on_device:
      raise ValueError(
        'colour_jitter runs on the host only: set config.data.augment_on_device=False with it'
      )


def open_image(data: bytes | None, max_pixels: int = TransformConfig.max_pixels) -> Image.Image:
  """The image in `data`, opened (header read, pixels not yet decoded), or DamagedImage."""
  if data is None:
    raise DamagedImage('missing_image')
  if not data:
    raise DamagedImage('empty_image', 'zero bytes')
  try:
    image = Image.open(io.BytesIO(data))
  except (Image.DecompressionBombError, ValueError) as error:
    raise DamagedImage('image_too_large', str(error)) from None
  except Exception as error:  # pylint: disable=broad-except  # Pillow raises many types
    raise DamagedImage('corrupt_image', f'{type(error).__name__}: {error}') from None
  width, height = image.size
  if width == 0 or height == 0:
    raise DamagedImage('empty_image', f'{width}x{height}')
  if width * height > max_pixels:
    raise DamagedImage('image_too_large', f'{width}x{height}')
  return image


def to_rgb(image: Image.Image) -> Image.Image:
  """Decodes `image` to 8-bit RGB (CMYK, grey, palette, alpha and 16-bit grey included), or
  DamagedImage for truncated or corrupt data. Alpha is dropped, as `convert('RGB')` does.
  Floating-point images are 'unsupported_image': their pixels have no defined range, and
  Pillow's conversion clips them, so a float image in [0, 1] would come out black."""
  if image.mode == 'F':
    raise DamagedImage('unsupported_image', 'floating-point pixels (mode F)')
  try:
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
      # 16-bit grey: Pillow's convert would clip at 255, so scale to 8 bits first.
      array = np.asarray(image, np.uint32 if image.mode == 'I' else np.uint16)
      shift = 8 if image.mode != 'I' or array.max(initial=0) > 255 else 0
      image = Image.fromarray((array >> shift).clip(0, 255).astype(np.uint8), 'L')
    if image.mode == 'RGB':
      image.load()  # decode here, so that damage is reported here
      return image
    return image.convert('RGB')
  except Exception as error:  # pylint: disable=broad-except
    raise DamagedImage('corrupt_image', f'{type(error).__name__}: {error}') from None


def decode(data: bytes | None, max_pixels: int = TransformConfig.max_pixels) -> Image.Image:
  """The RGB image in `data`, fully decoded, or DamagedImage."""
  return to_rgb(open_image(data, max_pixels))


def random_resized_crop_box(
  width: int, height: int, rng: np.random.Generator, min_scale: float = 0.08
) -> tuple[float, float, float, float]:
  """torchvision's RandomResizedCrop box (left, top, right, bottom): 10 tries at an area in
  [min_scale, 1] of the image and a log-uniform aspect ratio in [3/4, 4/3], then a centre crop
  of the clamped ratio."""
  area = width * height
  log_ratio = (math.log(3 / 4), math.log(4 / 3))
  for _ in range(10):
    target = area * rng.uniform(min_scale, 1.0)
    ratio = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target * ratio))
    h = round(math.sqrt(target / ratio))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  ratio = width / height
  if ratio < 3 / 4:
    w, h = width, round(width / (3 / 4))
  elif ratio > 4 / 3:
    w, h = round(height * (4 / 3)), height
  else:
    w, h = width, height
  top, left = (height - h) // 2, (width - w) // 2
  return left, top, left + w, top + h


def crop_resize(image: Image.Image, box, size: int, dct_scaling: bool = True) -> Image.Image:
  """`box` of `image` resized to size x size (bilinear); with `dct_scaling`, a JPEG decodes at
  the smallest DCT scale that keeps the box at least `size` pixels wide and tall."""
  left, top, right, bottom = box
  width, height = image.size
  if dct_scaling and image.format == 'JPEG' and image.mode in ('RGB', 'L', 'CMYK'):
    # draft picks the largest reduction whose result is at least the requested size.
    scale = max(size / (right - left), size / (bottom - top))
    if scale < 1.0:
      image.draft('RGB', (math.ceil(width * scale), math.ceil(height * scale)))
  sx, sy = image.size[0] / width, image.size[1] / height
  image = to_rgb(image)
  return image.resize(
    (size, size), Image.BILINEAR, box=(left * sx, top * sy, right * sx, bottom * sy)
  )


def crop(data: bytes | None, rng: np.random.Generator, config: 'TransformConfig') -> Image.Image:
  """Encoded image -> its RandomResizedCrop, config.image_size square (PIL RGB), or
  DamagedImage."""
  image = open_image(data, config.max_pixels)
  box = random_resized_crop_box(*image.size, rng, config.min_scale)
  return crop_resize(image, box, config.image_size, config.dct_scaling)


def colour_jitter(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
  """Brightness, contrast and saturation, each by a factor in [1 - s, 1 + s], in random order."""
  enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
  for i in rng.permutation(len(enhancers)):
    image = enhancers[i](image).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
  return image


def erasing_box(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """timm's RandomErasing(mode='pixel', count 1) box on a height x width image: int32 [4]
  (top, left, box height, box width) of 2% to 1/3 of the area, log-uniform aspect in
  [0.3, 1/0.3]; zeros when none of 10 tries fits."""
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(0.02, 1 / 3)
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
    h = round(math.sqrt(target * aspect))
    w = round(math.sqrt(target / aspect))
    if w < width and h < height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return np.array([top, left, h, w], np.int32)
  return np.zeros(4, np.int32)


def erase(pixels: np.ndarray, box: np.ndarray, seed: int) -> np.ndarray:
  """Fills `box` (erasing_box's) of uint8 [H, W, 3] `pixels`, in place, with pixels that
  normalise to N(0, 1) noise (clipped to uint8), drawn from `seed`."""
  top, left, h, w = (int(v) for v in box)
  noise = np.random.default_rng(seed).standard_normal((h, w, 3)) * IMAGENET_STD + IMAGENET_MEAN
  pixels[top : top + h, left : left + w] = np.clip(np.rint(noise * 255.0), 0, 255)
  return pixels


def augment_params(rng: np.random.Generator, config: 'TransformConfig') -> dict:
  """One image's draws of flip, RandAugment and random erasing, as the arrays of a batch's
  'augment': 'flip' bool, 'ops' int32 [2] and 'args' [2] (randaugment.draw; all skipped
  without RandAugment), 'erase' int32 [4] (erasing_box; zeros: none), 'erase_seed' uint32, the
  seed of its noise."""
  size = config.image_size
  flip = rng.random() < 0.5
  if config.randaugment:
    ops, args = randaugment.draw(rng, size, size)
  else:
    ops, args = np.full(2, -1, np.int32), np.zeros(2, np.float32)
  erase_box, seed = np.zeros(4, np.int32), 0
  if config.random_erasing and rng.random() < config.random_erasing:
    erase_box = erasing_box(rng, size, size)
    seed = int(rng.integers(2**32))
  return {
    'flip': np.bool_(flip),
    'ops': ops,
    'args': args,
    'erase': erase_box,
    'erase_seed': np.uint32(seed),
  }


def augment_on_host(
  image: Image.Image, params: dict, config: 'TransformConfig', rng: np.random.Generator
) -> np.ndarray:
  """`augment_params`' flip, RandAugment and erasing applied to `image` on the host (colour
  jitter too, if configured, drawn from `rng`) -> uint8 [S, S, 3]."""
  if params['flip']:
    image = image.transpose(Image.FLIP_LEFT_RIGHT)
  if config.colour_jitter:
    image = colour_jitter(image, config.colour_jitter, rng)
  image = randaugment.apply(image, params['ops'], params['args'])
  pixels = np.array(image, np.uint8)
  if params['erase'][2] and params['erase'][3]:
    erase(pixels, params['erase'], params['erase_seed'])
  return pixels


def train_transform(
  data: bytes | None, rng: np.random.Generator, config: TransformConfig = TransformConfig()
) -> dict:
  """Encoded image -> {'image': uint8 [S, S, 3], 'augment': its draws} with
  `config.augment_on_device` (the crop; the train step applies the draws), else {'image': the
  augmented pixels}; or DamagedImage."""
  image = crop(data, rng, config)
  params = augment_params(rng, config)
  if config.augment_on_device:
    return {'image': np.asarray(image, np.uint8), 'augment': params}
  return {'image': augment_on_host(image, params, config, rng)}
