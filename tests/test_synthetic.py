"""The synthetic shapes dataset: determinism, pixel-exact masks, captions, coverage, errors."""

import collections
import math
import re

import numpy as np
import pytest

from groupvit_jax import tokenizer
from input_pipeline import synthetic

CONFIG = synthetic.SyntheticConfig()  # 64x64, 1..3 shapes
NUM_SAMPLES = 2000
GRAY = synthetic.Background('solid', ('gray',), ((128, 128, 128),))


@pytest.fixture(scope='module')
def train():
  return [synthetic.sample(CONFIG, 'train', i) for i in range(NUM_SAMPLES)]


def _same(a: synthetic.Sample, b: synthetic.Sample) -> bool:
  return (
    np.array_equal(a.image, b.image)
    and np.array_equal(a.mask, b.mask)
    and (a.caption, a.nouns, a.objects, a.background)
    == (b.caption, b.nouns, b.objects, b.background)
  )


def _label(name: str) -> int:
  return synthetic.CLASS_NAMES.index(name)


def test_a_sample_is_a_pure_function_of_seed_split_and_index(train):
  again = synthetic.sample(synthetic.SyntheticConfig(), 'train', 7)
  assert _same(again, train[7])
  assert not _same(train[8], train[7])
  assert not _same(synthetic.sample(CONFIG, 'heldout', 7), train[7])
  assert not _same(synthetic.sample(synthetic.SyntheticConfig(seed=1), 'train', 7), train[7])
  # Any order, any subset: batch rows are the samples at those indices.
  rows = synthetic.batch(CONFIG, 'train', [12, 3, np.int64(12)])
  for row, index in enumerate([12, 3, 12]):
    assert np.array_equal(rows['image'][row], train[index].image)
    assert np.array_equal(rows['mask'][row], train[index].mask)
    assert rows['caption'][row] == train[index].caption
    assert rows['nouns'][row] == train[index].nouns


def test_heldout_images_never_appear_in_train(train):
  seen = {s.image.tobytes() for s in train}
  assert len(seen) == NUM_SAMPLES
  heldout = synthetic.batch(CONFIG, 'heldout', range(500))['image']
  assert not seen & {image.tobytes() for image in heldout}


def test_hand_built_scene_is_pixel_exact():
  # A red square with half-side 7.9 px centred at (16, 16), then a blue circle of radius 6.5 on
  # top at (22, 22), on gray.
  square = synthetic.SceneObject('square', 'red', (215, 35, 35), (16.0, 16.0), 7.9 / 0.7)
  circle = synthetic.SceneObject('circle', 'blue', (35, 80, 215), (22.0, 22.0), 6.5)
  image, mask = synthetic.render([square, circle], GRAY, 32)
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert mask.shape == (32, 32) and mask.dtype == np.int32

  centres = np.arange(32) + 0.5
  in_square = (np.abs(centres - 16)[:, None] <= 7.9) & (np.abs(centres - 16)[None, :] <= 7.9)
  assert in_square.sum() == 16 * 16  # rows and columns 8..23
  distance = np.hypot(centres[:, None] - 22, centres[None, :] - 22)
  assert (mask[distance < 6.4] == _label('circle')).all()
  assert (mask[distance > 6.6] != _label('circle')).all()
  # The circle is on top; the square keeps the rest of its box; nothing else is labelled.
  is_circle = mask == _label('circle')
  np.testing.assert_array_equal(mask == _label('square'), in_square & ~is_circle)
  np.testing.assert_array_equal(mask == 0, ~in_square & ~is_circle)
  # Every pixel has exactly the colour of its label.
  colours = np.array([(128, 128, 128), (35, 80, 215), (215, 35, 35)], np.uint8)
  index = np.select([mask == _label('circle'), mask == _label('square')], [1, 2], 0)
  np.testing.assert_array_equal(image, colours[index])


def test_shapes_look_like_their_names():
  size, c, r = 101, 50.5, 40.0  # the centre pixel is (50, 50)

  def mask(shape):
    obj = synthetic.SceneObject(shape, 'white', (255, 255, 255), (c, c), r)
    return synthetic.render([obj], GRAY, size)[1] > 0

  def width(m, row):
    return int(m[row].sum())

  def rows(m):
    return np.nonzero(m.any(axis=1))[0]

  circle = mask('circle')
  assert circle.sum() == pytest.approx(math.pi * r * r, rel=0.01)
  ring = mask('ring')
  assert ring[50, 10:91].any() and not ring[50, 40:61].any()  # a hole of half the radius
  assert ring.sum() == pytest.approx(math.pi * 0.75 * r * r, rel=0.02)
  square = mask('square')
  top, bottom = rows(square)[[0, -1]]
  assert square[top : bottom + 1].all(axis=0).sum() == width(square, top) == bottom - top + 1
  diamond = mask('diamond')
  assert diamond[50, 50] and not diamond[20, 20]  # corners of its box are empty
  assert np.ptp(rows(diamond)) > 1.3 * width(diamond, 50)  # taller than wide
  triangle = mask('triangle')
  top, bottom = rows(triangle)[[0, -1]]
  assert width(triangle, top) <= 3 and width(triangle, bottom) > 60  # apex up, flat base
  cross = mask('cross')
  assert cross[50].sum() > 70 and cross[:, 50].sum() > 70 and not cross[30, 30]
  star = mask('star')
  top = rows(star)[0]
  assert np.nonzero(star[top])[0].mean() == pytest.approx(50, abs=1)  # a point straight up
  assert star[50, 50] and not star[85, 50]  # between the two lower points
  heart = mask('heart')
  top, bottom = rows(heart)[[0, -1]]
  lobes = np.nonzero(heart[top + 4])[0]
  assert not heart[top + 4, 50] and lobes.min() < 40 < 60 < lobes.max()  # two lobes
  assert width(heart, bottom) <= 3  # and a point at the bottom


def test_objects_and_background_have_exactly_their_colours(train):
  checked = collections.Counter()
  for s in train[:400]:
    for obj in s.objects:
      colours = np.unique(s.image[s.mask == obj.label], axis=0)
      if obj.texture == 'plain':
        np.testing.assert_array_equal(colours, [obj.rgb])
      else:  # the colour and one shade of it
        assert len(colours) == 2 and list(obj.rgb) in colours.tolist()
      checked[obj.texture] += 1
    pixels = s.image[s.mask == 0].astype(int)
    bg = s.background
    if bg.style == 'solid':
      assert (pixels == bg.rgb[0]).all()
    elif bg.style == 'gradient':
      low, high = np.minimum(*bg.rgb), np.maximum(*bg.rgb)
      assert ((pixels >= low) & (pixels <= high)).all()
    else:  # noise shifts all three channels alike, except where it clips
      shift = pixels - bg.rgb[0]
      unclipped = ((pixels > 0) & (pixels < 255)).all(axis=1)
      assert (shift[unclipped] == shift[unclipped, :1]).all()
      assert np.abs(shift).max() < 80
    checked[bg.style] += 1
  assert min(checked.values()) > 30, checked


def test_shape_colours_give_each_shape_its_colour_on_neutral_backgrounds():
  config = synthetic.SyntheticConfig(shape_colours=True)
  shapes = collections.Counter()
  for i in range(400):
    s = synthetic.sample(config, 'train', i)
    assert set(s.background.colours) <= set(synthetic.NEUTRAL_COLOURS)
    for obj in s.objects:
      assert obj.colour == synthetic.SHAPE_COLOURS[obj.shape]
      # Each shape still stands out against its background.
      assert (
        obj.colour in synthetic._CONTRASTING[(s.background.colours[0], s.background.colours[-1])]
      )
      shapes[obj.shape] += 1
  assert set(shapes) == set(synthetic.OBJECT_CLASSES) and min(shapes.values()) > 40, shapes
  # Without the option, colours stay random.
  default = [synthetic.sample(CONFIG, 'train', i) for i in range(50)]
  assert any(o.colour != synthetic.SHAPE_COLOURS[o.shape] for s in default for o in s.objects)


def test_without_textures_every_shape_is_plain_and_the_rest_of_the_scene_is_unchanged(train):
  config = synthetic.SyntheticConfig(textures=False)
  textured = 0
  for i, s in enumerate(train[:500]):
    plain = synthetic.sample(config, 'train', i)
    assert all(o.texture == 'plain' for o in plain.objects)
    # Textures are one draw of the scene's stream: the same shapes, places and colours.
    assert [(o.shape, o.centre, o.radius, o.rgb) for o in plain.objects] == [
      (o.shape, o.centre, o.radius, o.rgb) for o in s.objects
    ]
    textured += any(o.texture != 'plain' for o in s.objects)
    # A plain shape is one colour: each label's pixels hold its shape's colour only.
    for o in plain.objects:
      assert (plain.image[plain.mask == o.label] == o.rgb).all()
  assert textured > 200  # the default does texture shapes


def test_render_reproduces_a_sample_from_its_scene(train):
  for s in train[:100]:
    image, mask = synthetic.render(s.objects, s.background, CONFIG.image_size)
    np.testing.assert_array_equal(image, s.image)
    np.testing.assert_array_equal(mask, s.mask)


def test_nouns_are_the_visible_classes_the_caption_names(train):
  min_pixels = math.ceil(CONFIG.min_visible * CONFIG.image_size**2)
  for s in train:
    assert len(set(s.nouns)) == len(s.nouns)
    present = {synthetic.CLASS_NAMES[k] for k in np.unique(s.mask) if k}
    assert set(s.nouns) == present == {o.shape for o in s.objects}, s.caption
    words = set(re.findall(r'[a-z]+', s.caption))
    assert words & set(synthetic.OBJECT_CLASSES) == present, s.caption
    counts = np.bincount(s.mask.ravel(), minlength=len(synthetic.CLASS_NAMES))
    for noun in s.nouns:
      assert counts[_label(noun)] >= min_pixels, (s.caption, noun)
    assert 'background' not in s.nouns
  # The nouns come in caption order.
  for s in train[:200]:
    positions = [re.search(rf'\b{n}\b', s.caption).start() for n in s.nouns]
    assert positions == sorted(positions)


def test_each_shape_keeps_most_of_itself_visible(train):
  for s in train[:300]:
    counts = np.bincount(s.mask.ravel(), minlength=len(synthetic.CLASS_NAMES))
    for obj in s.objects:
      alone = synthetic.render([obj], s.background, CONFIG.image_size)[1]
      assert counts[obj.label] >= 0.6 * np.count_nonzero(alone), s.caption


def test_rings_lie_under_the_other_shapes(train):
  # A shape seen through a ring's hole would look like a disk, whatever its class.
  with_ring = [s for s in train if 'ring' in s.nouns and len(s.objects) > 1]
  assert len(with_ring) > 100
  assert all(s.objects[0].shape == 'ring' for s in with_ring)


def test_classes_counts_and_attributes_are_all_covered_and_balanced(train):
  classes = collections.Counter(n for s in train for n in s.nouns)
  assert set(classes) == set(synthetic.OBJECT_CLASSES)
  mean = sum(classes.values()) / len(classes)
  assert all(0.8 * mean < n < 1.2 * mean for n in classes.values()), classes
  counts = collections.Counter(len(s.objects) for s in train)
  assert set(counts) == {1, 2, 3}
  assert all(0.28 * NUM_SAMPLES < n < 0.39 * NUM_SAMPLES for n in counts.values()), counts
  objects = [o for s in train for o in s.objects]
  assert {o.colour for o in objects} == set(synthetic.COLOURS)
  assert {o.texture for o in objects} == set(synthetic.TEXTURES)
  assert {s.background.style for s in train} == set(synthetic.BACKGROUND_STYLES)
  names_background = sum('background' in s.caption for s in train) / NUM_SAMPLES
  assert 0.4 < names_background < 0.6
  assert len({s.caption for s in train}) > 0.9 * NUM_SAMPLES
  # Shapes vary in size (min_area 0.05 to max_area 0.25 of the image) and position.
  alone = [(s.mask > 0).mean() for s in train if len(s.objects) == 1]
  assert min(alone) < 0.07 and max(alone) > 0.22
  centres = np.array([o.centre for o in objects]) / CONFIG.image_size
  assert centres.min() < 0.2 and centres.max() > 0.8


def test_names_are_single_clip_tokens():
  tok = tokenizer.default_tokenizer()
  for word in synthetic.OBJECT_CLASSES + tuple(synthetic.COLOURS):
    assert len(tok.encode(word)) == 1, word


@pytest.mark.parametrize('size', [32, 64, 224])
def test_sizes(size):
  config = synthetic.SyntheticConfig(image_size=size)
  out = synthetic.batch(config, 'heldout', range(3))
  assert out['image'].shape == (3, size, size, 3) and out['image'].dtype == np.uint8
  assert out['mask'].shape == (3, size, size) and out['mask'].dtype == np.int32
  assert out['mask'].min() == 0 and out['mask'].max() <= len(synthetic.OBJECT_CLASSES)
  assert len(out['caption']) == len(out['nouns']) == 3
  min_pixels = math.ceil(config.min_visible * size * size)
  for mask, nouns in zip(out['mask'], out['nouns']):
    counts = np.bincount(mask.ravel(), minlength=len(synthetic.CLASS_NAMES))
    assert all(counts[_label(n)] >= min_pixels for n in nouns)
  empty = synthetic.batch(config, 'train', [])
  assert empty['image'].shape == (0, size, size, 3) and empty['caption'] == []


def test_crowded_scenes_fit():
  config = synthetic.SyntheticConfig(
    min_objects=8, max_objects=8, min_area=0.0375, min_visible=0.03
  )
  for i in range(5):
    s = synthetic.sample(config, 'train', i)
    assert sorted(s.nouns) == sorted(synthetic.OBJECT_CLASSES)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (dict(image_size=16), 'image_size'),
    (dict(image_size=64.0), 'image_size'),
    (dict(max_objects=9), 'max_objects must be at most 8'),
    (dict(min_objects=0), 'min_objects'),
    (dict(min_objects=3, max_objects=2), 'min_objects'),
    (dict(seed=-1), 'seed'),
    (dict(min_area=0.3, max_area=0.2), 'min_area'),
    (dict(max_area=0.5), 'max_area'),
    (dict(min_visible=0.06), 'min_visible'),
    (dict(max_objects=8), 'side by side'),
  ],
)
def test_bad_configs_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.SyntheticConfig(**kwargs)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="unknown split 'test'"):
    synthetic.sample(CONFIG, 'test', 0)
  with pytest.raises(ValueError, match='index'):
    synthetic.batch(CONFIG, 'train', [-1])
  with pytest.raises(ValueError, match='unknown shape'):
    synthetic.SceneObject('hexagon', 'red', (255, 0, 0), (10.0, 10.0), 5.0)
  with pytest.raises(ValueError, match='gradient'):
    synthetic.Background('gradient', ('red',), ((255, 0, 0),))
