"""The training images' flip, RandAugment and random erasing, batched on the accelerator in JAX.

  images = augment(images, params)   # uint8 [B, H, W, 3] -> uint8 [B, H, W, 3], jittable

The train step calls `augment` on the uint8 crops that the host sends (RandomResizedCrop and
resize stay on the host); the host draws every image's random parameters, so this module
holds no randomness of its own except the erasing noise, which comes from a per-image seed.
`params` holds arrays with leading dimension B:

  'flip':       bool or uint8 [B]   flip horizontally (first)
  'ops':        int32 [B, N]        indices into OP_NAMES, -1 for no op; applied j = 0..N-1
  'args':       float32 [B, N]      each op's argument (see `apply_op`)
  'erase':      int32 [B, 4]        (top, left, height, width) of the erased box; a zero height
                                    or width erases nothing (last)
  'erase_seed': uint32 [B]          the box's noise comes from jax.random.key(erase_seed)

Every row is computed on its own (vmap, no cross-row op), so the batch may be sharded.

Precision against Pillow 8/9 (tests/randaugment_reference.py, as measured by
tests/test_device_augment.py): every op gives the reference's image bit for bit at the float32
argument it is given, on every level 0, 0.5, ..., 10 and sign, on noise, gradient,
low-contrast, constant and odd-sized (37x61) images, and composed in `augment`.
- AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd: exact, in integers.
  Pillow computes AutoContrast's LUT in float64, which at some exact integers lands an ulp
  below and truncates one lower; a table of those (lo, hi, value) cases, built on the host in
  NumPy, supplies them (checked for every (lo, hi)).
- Color, Contrast, Brightness: exact. The float32 product of the blend is a sum of exact
  partial products (the factor split into 12-bit halves), so it rounds as the reference's does
  whether or not XLA fuses a multiply and an add (on CPU it does: a plain a * b + c blend
  differs from NumPy's float32 in 20% of values).
- Sharpness: exact, in integers: the SMOOTH kernel's exact value is at least 1/26 from an
  integer, far beyond the float32 error of Pillow's sum (see `_sharpness_degenerate`).
- ShearX/Y, TranslateX/YRel: exact, in integers. The offset (s times a half-integer, or t) is
  constant along the sampled axis and, for a float32 argument with |arg| >= 2**-20 (or 0), a
  multiple of 2**-44 that int32 words hold exactly, as is Pillow's float64 lerp (images up to
  2048 pixels a side). Below 2**-20 the weight is truncated to 44 bits.
- Rotate: cos and sin as float32 pairs (Taylor series, about 2**-44), so sample positions are
  within about 1e-12 pixel of Pillow's; the value is computed in float32 with an error bound,
  and pixels whose bound straddles an integer (about 1e-3 of pixels; up to 1024 an image)
  are recomputed in pairs. Exact in every case tested (also 64 random angles on three
  sizes). A value can differ, by 1, only where a sample lands within about 1e-12 of a
  truncation, which takes an exact coincidence such as a pixel mapping onto a pixel centre,
  or where more than 1024 pixels of an image are unsure.
At the float64 argument instead (the host rounds it to float32), the LUT, enhance and rotate
ops are unchanged (their arguments are exact in float32). Shear and translate move by the
argument's rounding: at random levels (N(9, 0.5)) 3e-5 to 7e-4 of values differ, by 1; at
the tests' decimal levels, whose products often land exactly on integers or on the image's
edge, up to 15% of values differ by 1 and up to 9 pixels take or lose the fill.
The erasing noise is jax.random's; its scaling to uint8 runs in float32 (about 1e-5 of values
differ by 1 from NumPy's float32, from fused multiply-adds).
"""

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from groupvit_jax.image_ops import IMAGENET_MEAN, IMAGENET_STD
from input_pipeline.randaugment import FILL, OP_NAMES

_INDEX = {name: i for i, name in enumerate(OP_NAMES)}

# The computation that op index i takes is _FAMILY[i + 1] (index -1: none).
_IDENTITY, _LUT, _BLEND, _AFFINE = range(4)
_LUT_OPS = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'PosterizeIncreasing',
  'SolarizeIncreasing',
  'SolarizeAdd',
)
_BLEND_OPS = (
  'ColorIncreasing',
  'ContrastIncreasing',
  'BrightnessIncreasing',
  'SharpnessIncreasing',
)
_FAMILY = (_IDENTITY,) + tuple(
  _LUT if name in _LUT_OPS else _BLEND if name in _BLEND_OPS else _AFFINE for name in OP_NAMES
)


# Float32 pairs (hi, lo), value hi + lo, |lo| <= ulp(hi) / 2. A product's leading part is a sum
# of exact partial products, so fused multiply-adds cannot change it; only its small cross terms
# (hi * lo) round, and they are exact too where one factor is an integer (shear, translate).


def _split(a):
  """a = hi + lo exactly, hi keeping the top 12 significant bits; the product of two such
  halves (or of a half and an integer below 2**12) is exact in float32."""
  bits = lax.bitcast_convert_type(a, jnp.uint32)
  hi = lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
  return hi, a - hi


def _np_split(a: float) -> tuple[np.float32, np.float32]:
  a = np.float32(a)
  hi = (np.array(a).view(np.uint32) & np.uint32(0xFFFFF000)).view(np.float32)[()]
  return hi, np.float32(a - hi)


def _two_sum(a, b):
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


def _add(x, y):
  s, e = _two_sum(x[0], y[0])
  t, f = _two_sum(x[1], y[1])
  s, e = _two_sum(s, e + t)
  return _two_sum(s, e + f)


def _neg(x):
  return -x[0], -x[1]


def _mul(x, y):
  ah, al = _split(x[0])
  bh, bl = _split(y[0])
  s, e1 = _two_sum(ah * bh, ah * bl)
  s, e2 = _two_sum(s, al * bh)
  s, e3 = _two_sum(s, al * bl)
  return _two_sum(s, ((e1 + e2) + e3) + (x[0] * y[1] + x[1] * y[0]))


def _pair(a):
  a = jnp.asarray(a, jnp.float32)
  return a, jnp.zeros_like(a)


def _floor(x):
  """floor(hi + lo) as float32 and the fraction hi + lo - floor as a pair in [0, 1)."""
  whole = jnp.floor(x[0])
  at_integer = whole == x[0]
  below = at_integer & (x[1] < 0)
  whole = jnp.where(below, whole - 1, whole)
  frac = _two_sum(x[0] - whole, x[1])  # x[0] - whole is exact: 0, 1 or a fraction of x[0]
  return whole, frac


def _np_pair(value: Fraction) -> tuple[float, float]:
  hi = np.float32(float(value))
  return float(hi), float(np.float32(float(value - Fraction(float(hi)))))


_PI = Fraction('3.14159265358979323846264338327950288419716939937510')
_RADIANS_PER_DEGREE = _np_pair(_PI / 180)
_COS_TERMS = tuple(_np_pair(Fraction((-1) ** k, math.factorial(2 * k))) for k in range(16))
_SIN_TERMS = tuple(_np_pair(Fraction((-1) ** k, math.factorial(2 * k + 1))) for k in range(16))


def _series(terms, t):
  total = _pair(terms[-1][0])
  for hi, lo in reversed(terms[:-1]):
    total = _add(_mul(total, t), (jnp.float32(hi), jnp.float32(lo)))
  return total


def _cos_sin(degrees):
  """cos and sin of -degrees (Image.rotate's inverse map) as pairs, to about 2**-44."""
  angle = lax.rem(degrees, jnp.float32(360.0))  # exact; then into [-180, 180], also exact
  angle = jnp.where(angle > 180, angle - 360, jnp.where(angle < -180, angle + 360, angle))
  theta = _mul(_pair(-angle), tuple(jnp.float32(v) for v in _RADIANS_PER_DEGREE))
  t = _mul(theta, theta)
  return _series(_COS_TERMS, t), _mul(theta, _series(_SIN_TERMS, t))


# LUT ops: one histogram per channel, the op's LUT (every candidate is 256 entries, cheap to
# compute), one gather.


def _histograms(pixels):
  """int32 [3, 256]: each channel's count of each value."""
  channels = pixels.astype(jnp.int32) + 256 * jnp.arange(3, dtype=jnp.int32)  # [H, W, 3]
  counts = jnp.zeros(3 * 256, jnp.int32).at[channels.reshape(-1)].add(1)
  return counts.reshape(3, 256)


@functools.cache
def _autocontrast_exceptions() -> np.ndarray:
  """Sorted keys (lo * 256 + n) * 256 + m where Pillow's float64 LUT entry, int((lo + m) *
  scale + offset) with scale = 255.0 / n, offset = -lo * scale, is one below the exact
  floor(m * 255 / n) (always at an exact integer: the float64 sum lands an ulp below it)."""
  keys = []
  for n in range(1, 256):
    scale = 255.0 / n
    lo = np.arange(256 - n)[:, None]
    m = np.arange(n + 1)[None, :]
    pillow = np.trunc((lo + m) * scale + -lo * scale)
    exact = m * 255 // n
    assert np.all((pillow == exact) | (pillow == exact - 1))
    rows, cols = np.nonzero(pillow != exact)
    keys.append((rows * 256 + n) * 256 + cols)
  return np.sort(np.concatenate(keys)).astype(np.int32)


def _autocontrast_lut(hist, arg):
  del arg
  present = hist > 0  # [3, 256]
  lo = jnp.argmax(present, axis=1)[:, None]  # [3, 1]
  hi = 255 - jnp.argmax(present[:, ::-1], axis=1)[:, None]
  n = hi - lo
  m = jnp.arange(256, dtype=jnp.int32)[None, :] - lo  # [3, 256]
  exceptions = jnp.asarray(_autocontrast_exceptions())
  key = (lo * 256 + n) * 256 + m
  found = exceptions[jnp.clip(jnp.searchsorted(exceptions, key), 0, exceptions.size - 1)] == key
  below = found & (m >= 0) & (m <= n)
  stretched = jnp.clip(jnp.floor_divide(m * 255, jnp.maximum(n, 1)) - below, 0, 255)
  return jnp.where(n > 0, stretched, jnp.arange(256, dtype=jnp.int32))


def _equalize_lut(hist, arg):
  del arg
  values = jnp.arange(256, dtype=jnp.int32)
  brightest = 255 - jnp.argmax(hist[:, ::-1] > 0, axis=1)  # [3]
  last = jnp.take_along_axis(hist, brightest[:, None], axis=1)  # [3, 1]
  step = (hist.sum(axis=1, keepdims=True) - last) // 255
  below = jnp.cumsum(hist, axis=1) - hist  # pixels with a smaller value
  equalized = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255)
  return jnp.where(step > 0, equalized, values)


def _invert_lut(hist, arg):
  del hist, arg
  return jnp.broadcast_to(255 - jnp.arange(256, dtype=jnp.int32), (3, 256))


def _posterize_lut(hist, arg):
  del hist
  bits = jnp.clip(jnp.round(arg).astype(jnp.int32), 0, 8)
  mask = -jnp.left_shift(jnp.int32(1), 8 - bits)  # ~(2 ** (8 - bits) - 1)
  return jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32) & mask, (3, 256))


def _solarize_lut(hist, arg):
  del hist
  values = jnp.arange(256, dtype=jnp.int32)
  threshold = jnp.round(arg).astype(jnp.int32)
  return jnp.broadcast_to(jnp.where(values < threshold, values, 255 - values), (3, 256))


def _solarize_add_lut(hist, arg):
  del hist
  values = jnp.arange(256, dtype=jnp.int32)
  add = jnp.round(arg).astype(jnp.int32)
  return jnp.broadcast_to(jnp.where(values < 128, jnp.minimum(255, values + add), values), (3, 256))


_LUTS = {
  'AutoContrast': _autocontrast_lut,
  'Equalize': _equalize_lut,
  'Invert': _invert_lut,
  'PosterizeIncreasing': _posterize_lut,
  'SolarizeIncreasing': _solarize_lut,
  'SolarizeAdd': _solarize_add_lut,
}
_LUT_SLOT = np.full(len(OP_NAMES), 0, np.int32)
for _slot, _name in enumerate(_LUT_OPS):
  _LUT_SLOT[_INDEX[_name]] = _slot


def _lut_op(index, pixels, arg):
  # The histogram is computed once (AutoContrast and Equalize share it); every LUT is 256
  # entries a channel, so all six are computed and the op's is selected.
  hist = _histograms(pixels)
  luts = jnp.stack([_LUTS[name](hist, arg) for name in _LUT_OPS])  # int32 [6, 3, 256]
  lut = luts[jnp.asarray(_LUT_SLOT)[index]].astype(jnp.uint8).reshape(-1)  # entries in [0, 255]
  flat = pixels.astype(jnp.int32) + 256 * jnp.arange(3, dtype=jnp.int32)  # [H, W, 3]
  return lut[flat]


# Enhance ops: Image.blend(degenerate, image, factor) in float32, truncated.


def _grey(pixels):
  """int32 [H, W]: ITU-R 601-2 luma in 16-bit fixed point, rounded (Pillow's RGB -> L)."""
  p = pixels.astype(jnp.int32)
  return (p[..., 0] * 19595 + p[..., 1] * 38470 + p[..., 2] * 7471 + 0x8000) >> 16


def _color_degenerate(pixels, grey):
  return jnp.broadcast_to(grey[..., None], pixels.shape)


def _contrast_degenerate(pixels, grey):
  # int(mean + 0.5) of the L image, as floor((2 sum + n) / 2n): equal to the float64 form, as
  # sum / n + 0.5 is either exactly an integer or at least 1 / 2n from one.
  count = pixels.shape[0] * pixels.shape[1]
  level = (2 * grey.sum() + count) // (2 * count)
  return jnp.full(pixels.shape, level, jnp.int32)


def _brightness_degenerate(pixels, grey):
  del grey
  return jnp.zeros(pixels.shape, jnp.int32)


def _sharpness_degenerate(pixels, grey):
  """ImageFilter.SMOOTH ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13), rounded and clipped, the
  one-pixel border kept. Pillow sums the nine float32 products and 0.5 and truncates; the
  exact value (2 n + 13) / 26, n = the kernel's integer sum, is at least 1/26 from an integer
  (2 n + 13 is odd), far beyond float32's error in that sum (below 1e-4), so Pillow's result
  is exactly floor((2 n + 13) / 26), computed here in integers (at most 255)."""
  del grey
  height, width = pixels.shape[:2]
  p = pixels.astype(jnp.int32)
  if height < 3 or width < 3:
    return p
  rows = p[:-2] + p[1:-1] + p[2:]  # [H - 2, W, 3]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]  # [H - 2, W - 2, 3]
  inner = (2 * (box + 4 * p[1:-1, 1:-1]) + 13) // 26
  return p.at[1:-1, 1:-1].set(inner)


_DEGENERATES = (
  _color_degenerate,
  _contrast_degenerate,
  _brightness_degenerate,
  _sharpness_degenerate,
)


def _blend_op(index, pixels, arg):
  kind = jnp.clip(index - _INDEX['ColorIncreasing'], 0, 3)
  base = lax.switch(kind, _DEGENERATES, pixels, _grey(pixels)).astype(jnp.float32)  # integers
  diff = pixels.astype(jnp.float32) - base  # exact
  high, low = _split(arg)
  value = base + (diff * high + diff * low)  # the product rounded once, then the sum
  return jnp.clip(jnp.trunc(value), 0, 255).astype(jnp.uint8)


# Geometric ops: Image.transform(AFFINE, BILINEAR, fillcolor=FILL), Image.rotate.

_FIXED = 22  # bits of each of a weight's two fixed-point words
_X_SHIFTS = (_INDEX['ShearX'], _INDEX['TranslateXRel'])
_SHEARS = (_INDEX['ShearX'], _INDEX['ShearY'])


_MASK = (1 << _FIXED) - 1


def _fixed(v):
  """A float32 v -> int32 (whole, high, low), v = whole + high / 2**22 + low / 2**44 with
  high and low in [0, 2**22) (exact when v is a multiple of 2**-44 below 2**30; else the
  magnitude is truncated). |v| - floor(|v|) and the scalings are exact in float32."""
  magnitude = jnp.abs(v)
  whole = jnp.floor(magnitude)
  scaled = (magnitude - whole) * jnp.float32(2.0**_FIXED)
  high = jnp.floor(scaled)
  low = jnp.floor((scaled - high) * jnp.float32(2.0**_FIXED))
  whole, high, low = (w.astype(jnp.int32) for w in (whole, high, low))
  negative = v < 0  # -(w + h + l) = (-w - 1) + (mask - h) / 2**22 + (mask + 1 - l) / 2**44
  return _carry(
    jnp.where(negative, -whole - 1, whole),
    jnp.where(negative, _MASK - high, high),
    jnp.where(negative, _MASK + 1 - low, low),
  )


def _carry(whole, high, low):
  high = high + (low >> _FIXED)
  return whole + (high >> _FIXED), high & _MASK, low & _MASK


def _fixed_sum(x, y):
  return _carry(x[0] + y[0], x[1] + y[1], x[2] + y[2])


def _shift_op(index, pixels, arg):
  """ShearX/Y, TranslateX/YRel. The sample sits at the pixel's centre moved along one axis
  (x for the X ops) by an offset o that is constant along that axis: s (v + 0.5) (v the other
  coordinate) or t. The weight of the other sample is frac(o), exact in fixed point (a float32
  s or t times a half-integer has at most 44 fractional bits when |s|, |t| >= 2**-20), so
  Pillow's float64 lerp start + (end - start) w is exact too and its truncation is
  start + floor((end - start) w), computed in int32 words."""
  height, width = pixels.shape[:2]
  along_x = (index == _X_SHIFTS[0]) | (index == _X_SHIFTS[1])
  shear = (index == _SHEARS[0]) | (index == _SHEARS[1])
  slope = _split(jnp.where(shear, arg, 0.0))  # 12-bit halves: their products are exact
  constant = _fixed(jnp.where(shear, 0.0, arg))

  def offsets(size):  # per line of the other axis: floor(o), weight words, inside bounds
    centres = jnp.arange(size, dtype=jnp.float32) + 0.5
    parts = (_fixed(slope[0] * centres), _fixed(slope[1] * centres), constant)
    whole, high, low = functools.reduce(_fixed_sum, parts)
    # The sample x + o + 0.5 is inside [0, n) iff x + floor(o) is in [-half, n - 1 - half],
    # half = (frac(o) >= 0.5).
    return whole, high, low, (high >= 2 ** (_FIXED - 1)).astype(jnp.int32)

  rows, cols = offsets(height), offsets(width)  # for the X ops, the Y ops
  y = jnp.arange(height, dtype=jnp.int32)[:, None]
  x = jnp.arange(width, dtype=jnp.int32)[None, :]
  shift, high, low, half = (
    jnp.where(along_x, r[:, None], c[None, :]) for r, c in zip(rows, cols)
  )  # [H, W]
  position = jnp.where(along_x, x, y) + shift
  size = jnp.where(along_x, width, height)
  inside = (position >= -half) & (position <= size - 1 - half)
  first = jnp.clip(position, 0, size - 1)
  second = jnp.clip(position + 1, 0, size - 1)
  start = jnp.where(along_x, y * width + first, first * width + x)
  end = jnp.where(along_x, y * width + second, second * width + x)
  flat = pixels.reshape(height * width, 3).astype(jnp.int32)
  start, end = flat[start], flat[end]  # [H, W, 3]
  d = end - start  # |d| <= 255: d * high and d * low fit in int32
  fraction = (d * high[..., None] + ((d * low[..., None]) >> _FIXED)) >> _FIXED
  out = (start + fraction).astype(jnp.uint8)
  return jnp.where(inside[..., None], out, jnp.asarray(FILL, jnp.uint8))


def _within(s, low, high):
  """low <= s < high for a pair s and float32 bounds."""
  return ((s[0] > low) | ((s[0] == low) & (s[1] >= 0))) & (
    (s[0] < high) | ((s[0] == high) & (s[1] < 0))
  )


def _quick_add(x, y):
  s, e = _two_sum(x[0], y[0])
  return _two_sum(s, e + (x[1] + y[1]))


_CANDIDATES = 1024  # pixels an image whose value is recomputed exactly (about 50 are needed)


def _rotate_op(index, pixels, arg):
  """Image.rotate(arg): output pixel (x, y) samples the input at (cos u + sin v + c, -sin u +
  cos v + f), (u, v) its centre less the image's centre, (c, f) the centre. Sample positions
  are float32 pairs (about 1e-12 pixel); the bilinear value is computed in float32 with a
  bound on its error, and where that bound straddles an integer (about 1e-3 of pixels) the
  value is recomputed exactly in pairs (at most _CANDIDATES pixels an image)."""
  del index
  height, width = pixels.shape[:2]
  centre_x, centre_y = jnp.float32(width / 2), jnp.float32(height / 2)
  cos, sin = _cos_sin(arg)
  u = _pair(jnp.arange(width, dtype=jnp.float32) + 0.5 - centre_x)  # [W]
  v = _pair(jnp.arange(height, dtype=jnp.float32) + 0.5 - centre_y)  # [H]
  # Sample positions less 0.5 (relative to pixel centres): per column and per row terms.
  half = _pair(-0.5)
  x_cols, x_rows = _mul(cos, u), _add(_add(_mul(sin, v), _pair(centre_x)), half)
  y_cols, y_rows = _mul(_neg(sin), u), _add(_add(_mul(cos, v), _pair(centre_y)), half)

  def grid(cols, rows):
    return _quick_add((cols[0][None, :], cols[1][None, :]), (rows[0][:, None], rows[1][:, None]))

  sx, sy = grid(x_cols, x_rows), grid(y_cols, y_rows)  # pairs [H, W]
  inside = _within(sx, -0.5, width - 0.5) & _within(sy, -0.5, height - 0.5)
  x0, wx = _floor(sx)
  y0, wy = _floor(sy)
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  left, right = jnp.clip(x0, 0, width - 1), jnp.clip(x0 + 1, 0, width - 1)
  top, bottom = jnp.clip(y0, 0, height - 1) * width, jnp.clip(y0 + 1, 0, height - 1) * width
  flat = pixels.reshape(height * width, 3).astype(jnp.float32)  # [H W, 3]
  p00, p01, p10, p11 = (
    flat[top + left],
    flat[top + right],
    flat[bottom + left],
    flat[bottom + right],
  )

  # Float32: weights rounded (error <= 2**-24), products and sums rounded; error below 2**-12
  # where any term is nonzero, none where both lerps are flat (then the value is p00).
  fx = (wx[0] + wx[1])[..., None]
  fy = (wy[0] + wy[1])[..., None]
  upper = p00 + (p01 - p00) * fx
  lower = p10 + (p11 - p10) * fx
  value = upper + (lower - upper) * fy
  whole = jnp.floor(value)
  flat_lerps = (p01 == p00) & (p11 == p10) & (lower == upper)
  bound = jnp.where(flat_lerps, 0.0, jnp.float32(2.0**-12))
  unsure = (jnp.floor(value - bound) != whole) | (jnp.floor(value + bound) != whole)
  out = jnp.clip(whole, 0, 255).astype(jnp.uint8).reshape(height * width, 3)

  # Recompute the unsure pixels in pairs.
  # Any _CANDIDATES pixels that include the unsure ones (recomputing a sure one is harmless).
  unsure = (unsure.any(-1) & inside).reshape(-1)
  _, picked = lax.top_k(unsure.astype(jnp.float32), min(_CANDIDATES, height * width))
  row, col = picked // width, picked % width

  def position(cols, rows):  # the pair at the picked pixels, computed again (no gather)
    return _floor(_quick_add((cols[0][col], cols[1][col]), (rows[0][row], rows[1][row])))

  x0_, wx_ = position(x_cols, x_rows)
  y0_, wy_ = position(y_cols, y_rows)
  x0_, y0_ = x0_.astype(jnp.int32), y0_.astype(jnp.int32)
  left_, right_ = jnp.clip(x0_, 0, width - 1), jnp.clip(x0_ + 1, 0, width - 1)
  top_ = jnp.clip(y0_, 0, height - 1) * width
  bottom_ = jnp.clip(y0_ + 1, 0, height - 1) * width
  source = pixels.reshape(height * width, 3).astype(jnp.float32)

  def lerp(start, end, weight):
    weight = (weight[0][..., None], weight[1][..., None])
    return _add(start, _mul(_add(end, _neg(start)), weight))

  def along_x(offset):
    return lerp(_pair(source[offset + left_]), _pair(source[offset + right_]), wx_)

  exact, _ = _floor(lerp(along_x(top_), along_x(bottom_), wy_))
  exact = jnp.clip(exact, 0, 255).astype(jnp.uint8)  # [K, 3]
  out = out.at[picked].set(exact).reshape(height, width, 3)
  return jnp.where(inside[..., None], out, jnp.asarray(FILL, jnp.uint8))


def _affine_op(index, pixels, arg):
  rotate = (index == _INDEX['Rotate']).astype(jnp.int32)
  return lax.switch(rotate, (_shift_op, _rotate_op), index, pixels, arg)


def _identity_op(index, pixels, arg):
  del index, arg
  return pixels


def apply_op(index, pixels, arg):
  """Op OP_NAMES[index] (none for -1) on uint8 [H, W, 3] at its argument `arg` (float32):
  Rotate's degrees (counter-clockwise about the centre; Pillow's exact transposes at
  multiples of 90 other than 0 are not reproduced), Posterize's bits (0 to 4),
  Solarize's threshold, SolarizeAdd's addend, the enhance ops' factor, ShearX/Y's s (affine
  coefficients (1, s, 0, 0, 1, 0) or (1, 0, 0, s, 1, 0)), TranslateX/YRel's offset in pixels
  (c or f of the affine map); unused by AutoContrast, Equalize and Invert. `index` may be
  traced: the op's family is selected with lax.switch, so under vmap each family (LUT,
  enhance, shear/translate, rotate) is computed once for every row, whatever its op."""
  index = jnp.clip(jnp.asarray(index, jnp.int32), -1, len(OP_NAMES) - 1)
  arg = jnp.asarray(arg, jnp.float32)
  family = jnp.asarray(_FAMILY, jnp.int32)[index + 1]
  branches = [_identity_op, _lut_op, _blend_op, _affine_op]
  return lax.switch(family, branches, jnp.maximum(index, 0), pixels, arg)


def erase(pixels, box, seed):
  """Random erasing on uint8 [H, W, 3]: the box (top, left, height, width) takes
  clip(rint((z * std + mean) * 255), 0, 255), z ~ N(0, 1) per pixel and channel from
  jax.random.normal(jax.random.key(seed)); drawn for the whole image, kept inside the box."""
  height, width = pixels.shape[:2]
  top, left, box_height, box_width = (box[i] for i in range(4))
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  mask = (rows >= top) & (rows < top + box_height) & (cols >= left) & (cols < left + box_width)
  z = jax.random.normal(jax.random.key(seed), pixels.shape, jnp.float32)
  noise = z * jnp.asarray(IMAGENET_STD, jnp.float32) + jnp.asarray(IMAGENET_MEAN, jnp.float32)
  noise = jnp.clip(jnp.rint(noise * 255), 0, 255).astype(jnp.uint8)
  return jnp.where(mask[..., None], noise, pixels)


def _augment_one(pixels, flip, ops, args, box, seed):
  pixels = jnp.where(flip.astype(bool), pixels[:, ::-1], pixels)
  for j in range(ops.shape[0]):
    pixels = apply_op(ops[j], pixels, args[j])
  return erase(pixels, box, seed)


def augment(images, params):
  """Flip, the ops in order and random erasing on uint8 [B, H, W, 3], per row (see the module
  docstring for `params`); jittable, and the batch may be sharded."""
  return jax.vmap(_augment_one)(
    images,
    jnp.asarray(params['flip']),
    jnp.asarray(params['ops'], jnp.int32),
    jnp.asarray(params['args'], jnp.float32),
    jnp.asarray(params['erase'], jnp.int32),
    jnp.asarray(params['erase_seed'], jnp.uint32),
  )
