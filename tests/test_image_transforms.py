"""The train transform: crop geometry, DCT-scaled decoding, RandAugment ops, erasing, and the
draws the device applies."""

import io

import numpy as np
import pytest
from PIL import Image

from input_pipeline import image_transforms as it
from input_pipeline import randaugment
from tests import shard_fixtures as fx

# The transform with flip, RandAugment and erasing applied on the host.
HOST = it.TransformConfig(augment_on_device=False)


def _gradient_jpeg(width=512, height=384) -> bytes:
  y, x = np.mgrid[0:height, 0:width]
  pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
  return fx.encode(Image.fromarray(pixels.astype(np.uint8)), 'JPEG', quality=95)


def test_random_resized_crop_boxes_stay_in_scale_and_ratio():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(2000):
    left, top, right, bottom = it.random_resized_crop_box(512, 384, rng)
    assert 0 <= left < right <= 512 and 0 <= top < bottom <= 384
    w, h = right - left, bottom - top
    areas.append(w * h / (512 * 384))
    ratios.append(w / h)
  # Rounding to whole pixels moves the bounds by a pixel at most.
  assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
  assert min(ratios) >= 3 / 4 - 0.02 and max(ratios) <= 4 / 3 + 0.02
  # The whole range is drawn: small crops and nearly whole images.
  assert np.quantile(areas, 0.05) < 0.15 and np.quantile(areas, 0.95) > 0.75


def test_crop_of_a_thin_image_falls_back_to_a_centre_crop():
  rng = np.random.default_rng(0)
  # No 8%..100% crop of 3:4..4:3 fits in 10 rows: the centre 13 x 10 (4:3, rounded).
  assert it.random_resized_crop_box(1000, 10, rng) == (493, 0, 506, 10)


def test_dct_scaled_decoding_matches_full_decoding():
  data = _gradient_jpeg()
  box = (100, 50, 228, 178)  # 128 pixels -> 64: a 1/2 DCT scale serves
  fast = np.asarray(it.crop_resize(Image.open(io.BytesIO(data)), box, 64), float)
  full = it.decode(data).resize((64, 64), Image.BILINEAR, box=box)
  assert np.abs(fast - np.asarray(full, float)).mean() < 2.0


def test_transform_output_and_determinism():
  data = _gradient_jpeg()
  a = it.train_transform(data, np.random.default_rng(7), HOST)['image']
  b = it.train_transform(data, np.random.default_rng(7), HOST)['image']
  c = it.train_transform(data, np.random.default_rng(8), HOST)['image']
  assert a.shape == (224, 224, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_device_draws_applied_on_the_host_give_the_host_transform():
  """With augment_on_device the host sends the crop and its draws; applying those draws on the
  host gives what the host transform gives from the same generator state."""
  data = _gradient_jpeg()
  device = it.TransformConfig()
  for seed in range(200):
    on_host = it.train_transform(data, np.random.default_rng(seed), HOST)
    sent = it.train_transform(data, np.random.default_rng(seed), device)
    assert set(on_host) == {'image'} and set(sent) == {'image', 'augment'}
    assert sent['image'].shape == (224, 224, 3) and sent['image'].dtype == np.uint8
    pixels = it.augment_on_host(Image.fromarray(sent['image']), sent['augment'], HOST, None)
    np.testing.assert_array_equal(pixels, on_host['image'], err_msg=f'seed {seed}')


def test_draws_cover_every_case():
  """Over 4,000 draws: flips about half, RandAugment slots skipped about half, erasing about a
  quarter with boxes of 2% to 1/3 of the image, every op at least once, fixed dtypes."""
  config = it.TransformConfig()
  draws = [it.augment_params(np.random.default_rng(s), config) for s in range(4000)]
  assert {k: (np.asarray(v).dtype, np.shape(v)) for k, v in draws[0].items()} == {
    'flip': (np.bool_, ()),
    'ops': (np.int32, (2,)),
    'args': (np.float32, (2,)),
    'erase': (np.int32, (4,)),
    'erase_seed': (np.uint32, ()),
  }
  flips = np.mean([d['flip'] for d in draws])
  ops = np.concatenate([d['ops'] for d in draws])
  erased = np.array([d['erase'] for d in draws if d['erase'][2]])
  assert abs(flips - 0.5) < 0.03 and abs(np.mean(ops < 0) - 0.5) < 0.03
  assert set(ops[ops >= 0].tolist()) == set(range(len(randaugment.OP_NAMES)))
  assert abs(len(erased) / len(draws) - 0.25) < 0.03
  areas = erased[:, 2] * erased[:, 3] / 224**2
  assert areas.min() >= 0.02 - 0.005 and areas.max() <= 1 / 3 + 0.01
  assert (erased[:, 0] + erased[:, 2] <= 224).all() and (erased[:, 1] + erased[:, 3] <= 224).all()
  plain = it.augment_params(np.random.default_rng(0), it.TransformConfig(randaugment=False))
  assert (plain['ops'] == -1).all()


def test_colour_jitter_needs_the_host():
  with pytest.raises(ValueError, match='augment_on_device=False'):
    it.TransformConfig(colour_jitter=0.4)
  it.TransformConfig(colour_jitter=0.4, augment_on_device=False)


@pytest.mark.parametrize(
  'data, reason',
  [
    (None, 'missing_image'),
    (b'', 'empty_image'),
    (b'\x89PNG garbage', 'corrupt_image'),
    (fx.huge_png(), 'image_too_large'),
    (fx.huge_png(20_000, 20_000), 'image_too_large'),  # under Pillow's bomb limit, over ours
  ],
)
def test_damaged_images_name_their_reason(data, reason):
  with pytest.raises(it.DamagedImage) as error:
    it.train_transform(data, np.random.default_rng(0))
  assert error.value.reason == reason


def _level_op(name, image, level=9.0, sign=1):
  return randaugment.OPS[name](image, randaugment.argument(name, level, sign, *image.size))


def test_randaugment_ops_at_magnitude_9():
  image = Image.fromarray(np.array([[[30, 140, 250]]], np.uint8))
  # Solarize (increasing): threshold 256 - int(0.9 * 256) = 26, so every value >= 26 inverts.
  assert np.asarray(_level_op('SolarizeIncreasing', image)).tolist() == [[[225, 115, 5]]]
  # SolarizeAdd: + int(0.9 * 110) = 99 below 128.
  assert np.asarray(_level_op('SolarizeAdd', image)).tolist() == [[[129, 140, 250]]]
  # Posterize (increasing): 4 - int(0.9 * 4) = 1 bit.
  assert np.asarray(_level_op('PosterizeIncreasing', image)).tolist() == [[[0, 128, 128]]]
  # Brightness (increasing): factor 1 - 0.81 when negated; Pillow's blend truncates.
  assert np.asarray(_level_op('BrightnessIncreasing', image, sign=-1)).tolist() == [[[5, 26, 47]]]


def test_translate_moves_by_45_percent_at_full_magnitude():
  pixels = np.zeros((10, 100, 3), np.uint8)
  pixels[:, 60:] = 255
  moved = np.asarray(_level_op('TranslateXRel', Image.fromarray(pixels), level=10.0))
  # The content shifts left by 45 pixels; the uncovered right side takes the fill colour.
  assert moved[5, 14].tolist() == [0, 0, 0] and moved[5, 16].tolist() == [255, 255, 255]
  assert moved[5, 99].tolist() == list(randaugment.FILL)


def test_random_erasing_paints_normalised_noise():
  pixels = np.zeros((224, 224, 3), np.uint8)
  it.erase(pixels, it.erasing_box(np.random.default_rng(3), 224, 224), seed=3)
  painted = pixels.reshape(-1, 3)[pixels.reshape(-1, 3).any(axis=1)]
  fraction = len(painted) / (224 * 224)
  assert 0.02 - 0.005 <= fraction <= 1 / 3 + 0.01
  normalised = (painted / 255.0 - it.IMAGENET_MEAN) / it.IMAGENET_STD
  assert abs(normalised.mean()) < 0.1 and abs(normalised.std() - 1.0) < 0.1


@pytest.mark.parametrize('name', sorted(fx.web_oddities()))
def test_web_oddities_decode_as_released_or_are_skipped_by_reason(name):
  members, reason = fx.web_oddities()[name]
  (data,) = [value for extension, value in members.items() if extension != 'txt']
  if reason:
    with pytest.raises(it.DamagedImage) as error:
      it.train_transform(data, np.random.default_rng(0))
    assert error.value.reason == reason
    return
  # Kept: the pixels the released pipeline decoded (Pillow's open, first frame, RGB, EXIF
  # orientation not applied), and a full-size sample from every crop drawn.
  released = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
  decoded = np.asarray(it.decode(data))
  np.testing.assert_array_equal(decoded, released)
  if name in ('animated_gif', 'animated_webp', 'multipage_tiff'):
    assert (decoded == (200, 0, 0)).all()  # the first frame's colour
  for seed in range(100):
    pixels = it.train_transform(data, np.random.default_rng(seed), HOST)['image']
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
