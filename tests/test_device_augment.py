"""input_pipeline/device_augment.py against the NumPy reference of Pillow 8/9's ops.

The device receives each op's argument in float32; every op equals the reference at that
argument (float64(float32(arg))) bit for bit. At the float64 argument itself the LUT, enhance
and rotate ops are equal too (their arguments are exact in float32); shear and translate
differ where the argument's rounding moves a sample across a truncation or the fill boundary,
which the tests count.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from groupvit_jax.image_ops import IMAGENET_MEAN, IMAGENET_STD
from input_pipeline import device_augment
from tests import randaugment_reference as reference

LEVELS = tuple(0.5 * i for i in range(21))  # 0, 0.5, ..., 10
SHIFTS = ('ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')


def _argument(name: str, level: float, sign: int, height: int, width: int) -> float:
  """The argument timm's op `name` takes at `level` (as reference.apply maps it), in float64."""
  fraction = level / reference.MAX_LEVEL
  signed = -1.0 if sign < 0 else 1.0
  if name == 'Rotate':
    return signed * fraction * 30.0
  if name == 'PosterizeIncreasing':
    return 4 - int(fraction * 4)
  if name == 'SolarizeIncreasing':
    return 256 - int(fraction * 256)
  if name == 'SolarizeAdd':
    return int(fraction * 110)
  if name.endswith('Increasing'):
    return 1.0 + signed * fraction * 0.9
  if name in ('ShearX', 'ShearY'):
    return signed * fraction * 0.3
  if name == 'TranslateXRel':
    return signed * fraction * 0.45 * width
  if name == 'TranslateYRel':
    return signed * fraction * 0.45 * height
  return 0.0


def _reference(name: str, pixels: np.ndarray, arg: float) -> np.ndarray:
  """The reference's op `name` at the argument `arg` (rather than at a level)."""
  coefficients = {
    'ShearX': (1, arg, 0, 0, 1, 0),
    'ShearY': (1, 0, 0, arg, 1, 0),
    'TranslateXRel': (1, 0, arg, 0, 1, 0),
    'TranslateYRel': (1, 0, 0, 0, 1, arg),
  }
  if name in coefficients:
    return reference.affine(pixels, coefficients[name])
  if name == 'Rotate':
    return reference.rotate(pixels, arg)
  if name == 'PosterizeIncreasing':
    return reference.posterize(pixels, int(arg))
  if name == 'SolarizeIncreasing':
    return reference.solarize(pixels, int(arg))
  if name == 'SolarizeAdd':
    return reference.solarize_add(pixels, int(arg))
  if name.endswith('Increasing'):
    return reference.enhance(name[: -len('Increasing')], pixels, arg)
  return reference.apply(name, pixels, 0.0)


def _images() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:224, 0:224]
  gradient = np.stack([x * 255 // 223, y * 255 // 223, (x + y) * 255 // 446], -1)
  return {
    'noise': rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),  # every weight shows
    'gradient': gradient.astype(np.uint8),
    'low_contrast': rng.integers(60, 90, (120, 160, 3), dtype=np.uint8),
    'constant': np.full((64, 64, 3), 77, np.uint8),
    'odd': rng.integers(0, 256, (37, 61, 3), dtype=np.uint8),  # the centre on a pixel
  }


@jax.jit
def _apply_each(pixels, indices, args):
  # One traced index and argument per element, one compilation per image shape. lax.map keeps
  # lax.switch a real branch (vmap would compute every op); augment's test covers vmap.
  return jax.lax.map(
    lambda case: device_augment.apply_op(case[0], pixels, case[1]), (indices, args)
  )


@functools.cache
def _device_results() -> dict[str, tuple[list, np.ndarray, np.ndarray]]:
  """Per image: the cases (name, level, sign), their float32 arguments and the device's
  outputs, every op at every level and sign in one call."""
  results = {}
  for image, pixels in _images().items():
    height, width = pixels.shape[:2]
    cases = [
      (name, level, sign)
      for name in device_augment.OP_NAMES
      for level in LEVELS
      for sign in ((1, -1) if name in reference.SIGNED else (1,))
    ]
    args = np.array([_argument(*case, height, width) for case in cases] + [3.0], np.float32)
    indices = np.array([device_augment.OP_NAMES.index(case[0]) for case in cases] + [-1], np.int32)
    cases.append(('none', 0.0, 1))  # index -1: no op, whatever the argument
    results[image] = (cases, args, np.asarray(_apply_each(pixels, indices, args)))
  return results


def test_op_names_are_the_references():
  assert device_augment.OP_NAMES == reference.NAMES


@pytest.mark.parametrize('name', reference.NAMES)
def test_op_equals_reference(name):
  fill_boundary = []  # shear and translate at the float64 argument: pixels off by more than 1
  rounded = []  # and the fraction of values off by 1
  for image, pixels in _images().items():
    cases, args, outputs = _device_results()[image]
    for (case_name, level, sign), arg, out in zip(cases, args, outputs):
      if case_name != name:
        continue
      where = f'{name} level {level} sign {sign} on {image}'
      np.testing.assert_array_equal(out, _reference(name, pixels, float(arg)), err_msg=where)
      at_level = reference.apply(name, pixels, level, sign)
      if name not in SHIFTS:
        # The float32 argument is the reference's: exact integers, the blend's float32
        # factor, degrees that are multiples of 1.5.
        np.testing.assert_array_equal(out, at_level, err_msg=where)
        continue
      diff = np.abs(out.astype(int) - at_level)
      fill_boundary.append(int((diff > 1).any(-1).sum()))
      rounded.append(float((diff == 1).mean()))
      # A sample that the rounding moves across the image's edge takes or leaves the fill:
      # a handful of pixels where s (y + 0.5) or t lands exactly on the edge (9 at most here).
      assert fill_boundary[-1] <= 16, where
  if name in SHIFTS:
    # At the decimal levels, fractional parts are multiples of 1/20 or 1/100: a product with
    # a pixel difference is often an exact integer, which float32's rounding of the argument
    # moves below (or above) it. Random levels do not land on such lattices.
    print(name, 'float64 argument: fill boundary', max(fill_boundary), 'off by 1', max(rounded))
    assert max(rounded) < 0.2, (name, max(rounded))


def test_no_op_keeps_the_image():
  for image, pixels in _images().items():
    cases, _, outputs = _device_results()[image]
    assert cases[-1] == ('none', 0.0, 1)
    np.testing.assert_array_equal(outputs[-1], pixels, err_msg=image)


@jax.jit
def _apply_to_each(index, images):
  return jax.vmap(device_augment.apply_op, (None, 0, None))(index, images, 0.0)


def test_autocontrast_every_range():
  # Every (lo, hi) of a channel, each row holding every value from lo to hi: every entry of
  # every LUT that an image uses, Pillow's float64 truncations included.
  pairs = [(lo, hi) for lo in range(256) for hi in range(lo, 256)]
  pairs += pairs[: -len(pairs) % 3]
  ranges = np.array(pairs).reshape(-1, 1, 3, 2)  # [P / 3, 1, 3 channels, (lo, hi)]
  values = np.arange(256)[None, :, None]
  images = np.clip(values, ranges[..., 0], ranges[..., 1]).astype(np.uint8)  # [P / 3, 256, 3]
  images = images[:, None]  # [P / 3, 1, 256, 3]
  outputs = np.asarray(_apply_to_each(reference.NAMES.index('AutoContrast'), images))
  for image, out in zip(images, outputs):
    np.testing.assert_array_equal(out, reference.autocontrast(image))


def test_equalize_and_autocontrast_on_few_values():
  rng = np.random.default_rng(4)
  images = np.empty((500, 4, 8, 3), np.uint8)
  for image in images:
    for c in range(3):
      choices = rng.choice(256, rng.integers(1, 7), replace=False)
      image[..., c] = rng.choice(choices, (4, 8), p=rng.dirichlet(np.ones(len(choices))))
  for name, op in (('Equalize', reference.equalize), ('AutoContrast', reference.autocontrast)):
    outputs = np.asarray(_apply_to_each(reference.NAMES.index(name), images))
    for image, out in zip(images, outputs):
      np.testing.assert_array_equal(out, op(image), err_msg=name)


def _host_params(rng: np.random.Generator, batch: int, size: int, num_ops: int = 2) -> dict:
  """Parameters drawn as the host pipeline draws them: two ops from the 15, each skipped with
  probability 0.5, at levels from N(9, 0.5) clipped to [0, 10], random signs; a flip with
  probability 0.5; an erased box in about half the rows, none (height or width 0) in the rest."""
  names = reference.NAMES
  ops = rng.integers(0, len(names), (batch, num_ops)).astype(np.int32)
  ops[rng.random((batch, num_ops)) < 0.5] = -1
  ops[0] = (-1, -1)
  ops[1] = (names.index('Rotate'), names.index('AutoContrast'))
  args = np.zeros((batch, num_ops), np.float32)
  for b in range(batch):
    for j in range(num_ops):
      if ops[b, j] >= 0:
        level = min(max(rng.normal(9.0, 0.5), 0.0), 10.0)
        sign = 1 if rng.random() < 0.5 else -1
        args[b, j] = _argument(names[ops[b, j]], level, sign, size, size)
  erase = np.zeros((batch, 4), np.int32)
  for b in range(batch):
    if rng.random() < 0.5:
      height, width = rng.integers(1, size // 2, 2)
      erase[b] = (
        rng.integers(0, size - height + 1),
        rng.integers(0, size - width + 1),
        height,
        width,
      )
    elif rng.random() < 0.5:
      erase[b] = (10, 20, 30, 0)  # zero width: nothing erased
  return {
    'flip': rng.random(batch) < 0.5,
    'ops': ops,
    'args': args,
    'erase': erase,
    'erase_seed': rng.integers(0, 2**32, batch, dtype=np.uint32),
  }


def _erase_noise(seed: int, shape) -> np.ndarray:
  """The fill the box takes, from the definition: jax.random.normal with key(seed), scaled in
  NumPy."""
  z = np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))
  pixels = (z * np.float32(IMAGENET_STD) + np.float32(IMAGENET_MEAN)) * np.float32(255)
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


_augment = jax.jit(device_augment.augment)


@functools.cache
def _augment_case():
  rng = np.random.default_rng(1)
  size, batch = 224, 64
  images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  images[::2] = _images()['gradient']  # smooth images too
  params = _host_params(rng, batch, size)
  return images, params, np.asarray(_augment(images, params))


def test_augment_equals_the_reference_ops_in_order():
  images, params, outputs = _augment_case()
  names = reference.NAMES
  noise_exact = noise_total = 0
  for b in range(len(images)):
    expected = images[b][:, ::-1] if params['flip'][b] else images[b]
    for index, arg in zip(params['ops'][b], params['args'][b]):
      if index >= 0:
        expected = _reference(names[index], expected, float(arg))
    top, left, height, width = params['erase'][b]
    box = np.zeros(expected.shape[:2], bool)
    box[top : top + height, left : left + width] = True
    # Outside the box: the reference, bit for bit; inside: the seed's noise.
    np.testing.assert_array_equal(outputs[b][~box], expected[~box], err_msg=f'row {b}')
    noise = _erase_noise(int(params['erase_seed'][b]), expected.shape)
    diff = np.abs(outputs[b][box].astype(int) - noise[box])
    assert diff.max(initial=0) <= 1, b  # NumPy's and XLA's float32 scaling (FMA) may differ
    noise_exact += int((diff == 0).sum())
    noise_total += diff.size
  assert noise_total > 100_000
  assert noise_exact >= 0.999 * noise_total


def test_augment_sharded_over_devices_equals_unsharded():
  images, params, outputs = _augment_case()
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  assert mesh.size == 8  # conftest's host devices
  sharding = NamedSharding(mesh, PartitionSpec('batch'))
  sharded = jax.device_put((images, params), sharding)
  result = _augment(*sharded)
  assert result.sharding.is_equivalent_to(sharding, result.ndim)
  np.testing.assert_array_equal(np.asarray(result), outputs)


def test_flip_takes_bool_or_uint8_and_no_ops():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (4, 8, 10, 3), dtype=np.uint8)
  params = {
    'flip': np.array([1, 0, 1, 0], np.uint8),
    'ops': np.zeros((4, 0), np.int32),  # N = 0: flip and erasing only
    'args': np.zeros((4, 0), np.float32),
    'erase': np.zeros((4, 4), np.int32),
    'erase_seed': np.zeros(4, np.uint32),
  }
  expected = np.where(params['flip'][:, None, None, None] > 0, images[:, :, ::-1], images)
  np.testing.assert_array_equal(_augment(images, params), expected)
  params['flip'] = params['flip'] > 0
  np.testing.assert_array_equal(_augment(images, params), expected)


@jax.jit
def _erase_all(seeds, boxes):
  pixels = jnp.zeros((len(seeds), 96, 96, 3), jnp.uint8)
  return jax.vmap(device_augment.erase)(pixels, boxes, seeds)


def test_erase_noise_is_the_normalised_gaussian():
  seeds = np.arange(8, dtype=np.uint32)
  boxes = np.tile(np.array([[0, 0, 96, 96]], np.int32), (8, 1))
  values = np.asarray(_erase_all(seeds, boxes)).reshape(-1, 3).astype(np.float64)  # [73728, 3]
  rng = np.random.default_rng(3)
  z = rng.standard_normal(values.shape)
  samples = np.clip(np.rint((z * IMAGENET_STD + IMAGENET_MEAN) * 255.0), 0, 255)
  count = len(values)
  for c in range(3):
    mean, std = samples[:, c].mean(), samples[:, c].std()
    assert abs(values[:, c].mean() - mean) < 5 * std * np.sqrt(2 / count), c
    assert abs(values[:, c].std() / std - 1) < 5 * np.sqrt(1 / count), c
    assert abs(mean - 255 * IMAGENET_MEAN[c]) < 1  # (clipping at 0 and 255 narrows the std)
    try:
      from scipy import stats
    except ImportError:
      continue
    assert stats.ks_2samp(values[:, c], samples[:, c]).pvalue > 1e-4, c
  # Independent per pixel and channel.
  correlation = np.corrcoef(values.T)
  assert np.abs(correlation - np.eye(3)).max() < 5 / np.sqrt(count)
  neighbours = np.corrcoef(values[:-1, 0], values[1:, 0])[0, 1]
  assert abs(neighbours) < 5 / np.sqrt(count)


def test_erase_noise_follows_the_seed_and_stays_in_the_box():
  seeds = np.array([5, 5, 6, 7, 7, 7, 7, 7], np.uint32)
  boxes = np.array([[10, 20, 30, 40]] * 4 + [[0, 0, 0, 50], [0, 0, 50, 0]] * 2, np.int32)
  out = np.asarray(_erase_all(seeds, boxes))
  np.testing.assert_array_equal(out[0], out[1])
  assert (out[0] != out[2]).mean() > 0.05
  assert (out[2] != out[3]).mean() > 0.05
  box = np.zeros((96, 96), bool)
  box[10:40, 20:60] = True
  assert not out[0][~box].any() and out[0][box].any(-1).mean() > 0.9
  assert not out[4:].any()  # zero height or width: nothing erased
