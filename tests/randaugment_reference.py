"""timm 0.4.12's RandAugment ops ('rand-m9-mstd0.5-inc1') as Pillow 8/9 computes them, in NumPy.

  pixels = apply(name, pixels, level, sign)   # uint8 [h, w, 3] -> uint8 [h, w, 3]

Written from the definitions, without calling Pillow: libImaging's affine transform with the
bilinear filter (Geometry.c), Image.rotate's matrix, ImageEnhance's degenerate images and
ImagingBlend (Blend.c), the RGB -> L weights (Convert.c), the SMOOTH kernel (Filter.c), ImageOps'
LUTs and Image.point's clipping of LUT entries. Where the result depends on floating-point
rounding, the same operations run in the same precision (float64 for coordinates and bilinear
weights, float32 for blending and filtering) and in the same order, so the images are
bit-identical, not merely close.
"""

import math

import numpy as np

MAX_LEVEL = 10.0
FILL = (124, 116, 104)  # timm's img_mean: round(255 * ImageNet mean)
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


# LUT ops. Image.point clips every LUT entry to [0, 255] before mapping.


def _map(pixels: np.ndarray, luts) -> np.ndarray:
  """Maps each channel through its LUT (one LUT for all channels if `luts` is 1-D)."""
  luts = np.clip(np.asarray(luts, np.int64), 0, 255).astype(np.uint8)
  if luts.ndim == 1:
    return luts[pixels]
  return np.stack([luts[c][pixels[..., c]] for c in range(pixels.shape[-1])], -1)


def _histograms(pixels: np.ndarray) -> list[np.ndarray]:
  return [np.bincount(pixels[..., c].ravel(), minlength=256) for c in range(pixels.shape[-1])]


def autocontrast(pixels: np.ndarray) -> np.ndarray:
  """Stretches each channel so that its darkest value maps to 0 and its brightest to 255."""
  luts = []
  for hist in _histograms(pixels):
    present = np.flatnonzero(hist)
    lo, hi = present[0], present[-1]
    if hi <= lo:
      luts.append(np.arange(256))
      continue
    scale = 255.0 / int(hi - lo)
    offset = -int(lo) * scale
    # int() truncates towards zero; values below lo go negative and clip to 0.
    luts.append(np.clip(np.trunc(np.arange(256) * scale + offset), 0, 255))
  return _map(pixels, luts)


def equalize(pixels: np.ndarray) -> np.ndarray:
  """Histogram equalisation with ImageOps' integer steps, per channel."""
  luts = []
  for hist in _histograms(pixels):
    counts = hist[hist > 0]
    step = (int(counts.sum()) - int(counts[-1])) // 255 if len(counts) > 1 else 0
    if not step:
      luts.append(np.arange(256))
      continue
    below = np.concatenate([[0], np.cumsum(hist)[:-1]])  # pixels with a smaller value
    # The brightest present value can map to 256: Image.point clips it to 255.
    luts.append((step // 2 + below) // step)
  return _map(pixels, luts)


def invert(pixels: np.ndarray) -> np.ndarray:
  return 255 - pixels


def posterize(pixels: np.ndarray, bits: int) -> np.ndarray:
  """Keeps the top `bits` bits; Pillow 8/9 give black at 0 bits (the mask has no low bits)."""
  mask = -(1 << (8 - bits))  # ~(2 ** (8 - bits) - 1) in two's complement
  return _map(pixels, np.arange(256) & mask)


def solarize(pixels: np.ndarray, threshold: int) -> np.ndarray:
  values = np.arange(256)
  return _map(pixels, np.where(values < threshold, values, 255 - values))


def solarize_add(pixels: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
  values = np.arange(256)
  return _map(pixels, np.where(values < threshold, np.minimum(255, values + add), values))


# Geometric ops: Image.transform(AFFINE, BILINEAR, fillcolor=FILL).


def affine(pixels: np.ndarray, coeffs, fill=FILL) -> np.ndarray:
  """Output pixel (x, y) samples the input at (a x' + b y' + c, d x' + e y' + f), where
  (x', y') = (x + 0.5, y + 0.5) is the pixel's centre; samples outside [0, w) x [0, h) keep the
  fill colour. Bilinear weights are in float64, interpolating along x first, and the result
  is truncated to uint8."""
  height, width = pixels.shape[:2]
  a, b, c, d, e, f = (float(v) for v in coeffs)
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  xs, ys = xs + 0.5, ys + 0.5
  sx = a * xs + b * ys + c
  sy = d * xs + e * ys + f
  inside = (sx >= 0.0) & (sx < width) & (sy >= 0.0) & (sy < height)
  # Sample coordinates relative to pixel centres; the left/top neighbour and the weights.
  sx, sy = sx - 0.5, sy - 0.5
  x0, y0 = np.floor(sx), np.floor(sy)
  wx, wy = (sx - x0)[..., None], (sy - y0)[..., None]
  x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
  # Neighbours beyond the border repeat the edge pixel. (Pillow skips the second row when
  # y + 1 == height; repeating row y there gives the same row twice and the same value.)
  left, right = np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1)
  top, bottom = np.clip(y0, 0, height - 1) * width, np.clip(y0 + 1, 0, height - 1) * width
  flat = pixels.reshape(height * width, -1)

  def along_x(row):
    start, end = flat[row + left].astype(np.float64), flat[row + right].astype(np.float64)
    return start + (end - start) * wx

  upper, lower = along_x(top), along_x(bottom)
  value = upper + (lower - upper) * wy
  out = np.trunc(value).astype(np.uint8)
  out[~inside] = fill
  return out


def rotate(pixels: np.ndarray, degrees: float, fill=FILL) -> np.ndarray:
  """Image.rotate(degrees) about (w / 2, h / 2), counter-clockwise, same size."""
  angle = degrees % 360.0
  if angle == 0:
    return pixels.copy()  # Pillow's exact fast path: no resampling at 0 degrees
  # 90, 180 and 270 degrees would take Pillow's transpose paths; RandAugment stays within 30.
  assert min(angle, 360.0 - angle) < 90.0, degrees
  height, width = pixels.shape[:2]
  cx, cy = width / 2.0, height / 2.0
  # The inverse map (output -> input) rotates by -angle. Pillow rounds its entries to 15
  # decimals and computes the offsets as M (-centre) + 0.0, then + centre; the same roundings
  # in the same order give the same sample positions to the last bit.
  theta = -math.radians(angle)
  cos, sin, minus_sin = (round(v, 15) for v in (math.cos(theta), math.sin(theta), -math.sin(theta)))
  c = cos * -cx + sin * -cy + 0.0 + cx
  f = minus_sin * -cx + cos * -cy + 0.0 + cy
  return affine(pixels, (cos, sin, c, minus_sin, cos, f), fill)


# Enhance ops: Image.blend(degenerate, image, factor).


def blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
  """degenerate + factor (image - degenerate) in float32 (the factor is a C float), truncated
  to uint8; a factor outside [0, 1] clips to [0, 255] first."""
  alpha = np.float32(factor)
  if alpha == 0.0:
    return degenerate.copy()
  if alpha == 1.0:
    return image.copy()
  base = degenerate.astype(np.float32)
  value = base + alpha * (image.astype(np.float32) - base)
  if 0.0 <= alpha <= 1.0:
    return value.astype(np.uint8)
  return np.clip(np.trunc(value), 0, 255).astype(np.uint8)


def grey(pixels: np.ndarray) -> np.ndarray:
  """RGB -> L: ITU-R 601-2 luma in 16-bit fixed point, rounded."""
  rgb = pixels.astype(np.int64)
  luma = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
  return (luma >> 16).astype(np.uint8)


def smooth(pixels: np.ndarray) -> np.ndarray:
  """ImageFilter.SMOOTH: the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 in float32,
  rounded (+0.5, then truncated) and clipped; the one-pixel border is copied unfiltered."""
  height, width = pixels.shape[:2]
  out = pixels.copy()
  if height < 3 or width < 3:
    return out
  one = np.float32(1.0) / np.float32(13.0)
  five = np.float32(5.0) / np.float32(13.0)
  p = pixels.astype(np.float32)

  def row_term(rows, centre):
    # One kernel row: left, centre and right products summed left to right.
    return (p[rows, :-2] * one + p[rows, 1:-1] * centre) + p[rows, 2:] * one

  # Accumulated from 0.5 (the rounding offset), the row below first, then the row itself,
  # then the row above.
  total = np.float32(0.5) + row_term(slice(2, None), one)
  total = total + row_term(slice(1, -1), five)
  total = total + row_term(slice(None, -2), one)
  out[1:-1, 1:-1] = np.clip(np.trunc(total), 0, 255).astype(np.uint8)  # truncation, clipped
  return out


def enhance(kind: str, pixels: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.<kind>(image).enhance(factor) on an RGB image."""
  if kind == 'Color':
    degenerate = np.repeat(grey(pixels)[..., None], 3, -1)
  elif kind == 'Contrast':
    luma = grey(pixels)
    mean = float(luma.sum(dtype=np.int64)) / luma.size  # ImageStat's mean of the L image
    degenerate = np.full_like(pixels, int(mean + 0.5))
  elif kind == 'Brightness':
    degenerate = np.zeros_like(pixels)
  elif kind == 'Sharpness':
    degenerate = smooth(pixels)
  else:
    raise ValueError(kind)
  return blend(degenerate, pixels, factor)


# timm 0.4.12's level -> argument maps (level in [0, 10]) and the ops of the increasing set.


def argument(name: str, level: float, sign: int, width: int, height: int) -> float:
  """timm's argument of op `name` at `level`; `sign` < 0 negates signed ops."""
  fraction = level / MAX_LEVEL
  magnitude = {
    'Rotate': fraction * 30.0,
    'PosterizeIncreasing': 4 - int(fraction * 4),
    'SolarizeIncreasing': 256 - int(fraction * 256),
    'SolarizeAdd': int(fraction * 110),
    'ShearX': fraction * 0.3,
    'ShearY': fraction * 0.3,
    'TranslateXRel': fraction * 0.45,
    'TranslateYRel': fraction * 0.45,
  }.get(name, fraction * 0.9)  # the enhance ops: 1 +- 0.9 level / 10
  if name in SIGNED and sign < 0:
    magnitude = -magnitude
  if name in (
    'ColorIncreasing',
    'ContrastIncreasing',
    'BrightnessIncreasing',
    'SharpnessIncreasing',
  ):
    return 1.0 + magnitude
  if name == 'TranslateXRel':
    return magnitude * width
  if name == 'TranslateYRel':
    return magnitude * height
  return magnitude


def apply_argument(name: str, pixels: np.ndarray, arg: float) -> np.ndarray:
  """timm's op `name` at its argument `arg` on uint8 RGB `pixels`."""
  if name == 'AutoContrast':
    return autocontrast(pixels)
  if name == 'Equalize':
    return equalize(pixels)
  if name == 'Invert':
    return invert(pixels)
  if name == 'Rotate':
    return rotate(pixels, arg)
  if name == 'PosterizeIncreasing':
    return posterize(pixels, int(arg))
  if name == 'SolarizeIncreasing':
    return solarize(pixels, int(arg))
  if name == 'SolarizeAdd':
    return solarize_add(pixels, int(arg))
  if name.endswith('Increasing'):  # Color, Contrast, Brightness, Sharpness
    return enhance(name[: -len('Increasing')], pixels, arg)
  if name == 'ShearX':
    return affine(pixels, (1, arg, 0, 0, 1, 0))
  if name == 'ShearY':
    return affine(pixels, (1, 0, 0, arg, 1, 0))
  if name == 'TranslateXRel':
    return affine(pixels, (1, 0, arg, 0, 1, 0))
  if name == 'TranslateYRel':
    return affine(pixels, (1, 0, 0, 0, 1, arg))
  raise ValueError(f'unknown op {name}')


def apply(name: str, pixels: np.ndarray, level: float, sign: int = 1) -> np.ndarray:
  """timm's op `name` at `level` on uint8 RGB `pixels`; `sign` < 0 negates signed ops."""
  height, width = pixels.shape[:2]
  return apply_argument(name, pixels, argument(name, level, sign, width, height))


NAMES = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'PosterizeIncreasing',
  'SolarizeIncreasing',
  'SolarizeAdd',
  'ColorIncreasing',
  'ContrastIncreasing',
  'BrightnessIncreasing',
  'SharpnessIncreasing',
  'ShearX',
  'ShearY',
  'TranslateXRel',
  'TranslateYRel',
)
