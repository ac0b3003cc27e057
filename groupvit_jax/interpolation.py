"""PyTorch-exact image resizing, align_corners=False, as separable [out, in] matrices.

The released model and its evaluation resize with torch.nn.functional.interpolate.
jax.image.resize differs: its cubic kernel uses A = -0.5 with renormalised borders, and it
antialiases when downsampling. These matrices reproduce torch's kernels exactly.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _bicubic_taps(src: float, in_size: int) -> list[tuple[int, float]]:
  """torch's cubic convolution, A = -0.75: four taps around an unclamped source index,
  each clamped to the border."""
  a = -0.75

  def cubic(t):
    t = abs(t)
    if t <= 1:
      return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
      return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0

  base = int(np.floor(src))
  frac = src - base
  return [(min(max(base + tap, 0), in_size - 1), cubic(tap - frac)) for tap in range(-1, 3)]


def _bilinear_taps(src: float, in_size: int) -> list[tuple[int, float]]:
  """torch's linear interpolation: negative source indices clamp to the first pixel."""
  src = max(src, 0.0)
  lo = int(np.floor(src))
  frac = src - lo
  return [(lo, 1.0 - frac), (min(lo + 1, in_size - 1), frac)]


_TAPS = {'bicubic': _bicubic_taps, 'bilinear': _bilinear_taps}


@functools.lru_cache(maxsize=128)
def resize_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
  """[out_size, in_size] float32 weights of torch's `method` ('bicubic' or 'bilinear')."""
  taps = _TAPS[method]
  matrix = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  for i in range(out_size):
    for index, weight in taps((i + 0.5) * scale - 0.5, in_size):
      matrix[i, index] += weight
  return matrix.astype(np.float32)


def resize(x: jax.Array, out_hw: tuple[int, int], method: str, axes=(-2, -1)) -> jax.Array:
  """Resizes the two `axes` of x (default: the last two, [..., H, W]) to `out_hw`."""
  x = jnp.moveaxis(x, axes, (-2, -1))
  rows = jnp.asarray(resize_matrix(x.shape[-2], out_hw[0], method))
  cols = jnp.asarray(resize_matrix(x.shape[-1], out_hw[1], method))
  x = jnp.einsum('...hw,Hh,Ww->...HW', x, rows, cols, precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(x, (-2, -1), axes)
