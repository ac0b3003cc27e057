"""Fully-supervised transfer (groupvit_jax.finetune): the crops, the loss, per-patch features of
both towers, and the command fine-tuning tiny models on synthetic scenes in a VOC layout."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from groupvit_jax import finetune
from groupvit_jax.evaluators import datasets
from groupvit_jax.models.segmentation_head import SegmentationModel, image_tower, patch_features
from groupvit_jax.training import finetune_data, finetune_step, finetuned_model
from groupvit_jax.weights import checkpoint
from input_pipeline import synthetic

TEXT = dict(vocab_size=64, context_length=8, width=16, depth=1, num_heads=2)
VIT = dict(
  image_size=32, patch_size=8, width=32, depth=2, num_heads=2, drop_path_rate=0.0, pooling='mean'
)
GROUPVIT = dict(
  image_size=32,
  patch_size=8,
  width=32,
  depths=(1, 1, 1),
  num_heads=2,
  num_group_tokens=(8, 4, 0),
  num_output_groups=(8, 4),
  drop_path_rate=0.0,
)


def model_config(image_tower_name: str, vision: dict) -> dict:
  return dict(
    image_tower=image_tower_name, vision=vision, text=TEXT, embed_dim=16, projection_hidden_dim=32
  )


def cheap_variables(shapes, seed: int, std: float = 0.02):
  """Variables of the given ShapeDtypeStructs without an init's compilation: normalisation
  scales and variances 1, biases and means 0, everything else normal with `std`."""
  rng = np.random.default_rng(seed)

  def value(path, shape):
    name = jax.tree_util.keystr(path[-1:])
    if name in ("['scale']", "['var']"):
      return np.ones(shape.shape, shape.dtype)
    if name in ("['bias']", "['mean']"):
      return np.zeros(shape.shape, shape.dtype)
    return (std * rng.standard_normal(shape.shape)).astype(shape.dtype)

  return jax.tree_util.tree_map_with_path(value, shapes)


def save_tiny_checkpoint(directory, image_tower_name: str = 'groupvit', vision=GROUPVIT) -> str:
  """A random tiny two-tower model saved as a groupvit_jax checkpoint."""
  config = model_config(image_tower_name, vision)
  variables = cheap_variables(checkpoint.variable_shapes(checkpoint.build_model(config)), 0)
  checkpoint.save(str(directory), config, variables)
  return str(directory)


def write_synthetic_voc(data_dir, num_train: int, num_val: int, size: int = 64) -> dict:
  """Synthetic scenes (each shape in its own colour; labels 0..8) in VOC2012's layout, train
  from the generator's 'train' split, val from 'heldout': masks [N, size, size] by split."""
  config = synthetic.SyntheticConfig(image_size=size, shape_colours=True)
  root = os.path.join(data_dir, 'VOCdevkit', 'VOC2012')
  masks = {}
  for split, source, count in (('train', 'train', num_train), ('val', 'heldout', num_val)):
    layout = datasets.layout('voc', split)
    for folder in (layout.images, layout.masks, os.path.dirname(layout.split)):
      os.makedirs(os.path.join(root, folder), exist_ok=True)
    scenes = synthetic.batch(config, source, range(count))
    ids = [f'{split}_{i:03d}' for i in range(count)]
    for i, image, mask in zip(ids, scenes['image'], scenes['mask']):
      Image.fromarray(image).save(os.path.join(root, layout.images, i + '.jpg'), quality=95)
      Image.fromarray(mask.astype(np.uint8)).save(os.path.join(root, layout.masks, i + '.png'))
    with open(os.path.join(root, layout.split), 'w') as f:
      f.write(''.join(i + '\n' for i in ids))
    masks[split] = scenes['mask']
  return masks


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
  """mmseg's mIoU written out: over the classes in the prediction or the truth, pixels
  labelled 255 left out."""
  pred, truth = pred[truth != 255], truth[truth != 255]
  present = np.union1d(pred, truth)
  ious = [((pred == c) & (truth == c)).sum() / ((pred == c) | (truth == c)).sum() for c in present]
  return float(np.mean(ious))


# --- The crops: random scale 0.5-2, random crop, padding -----------------------------------


def test_scale_crop_pad_by_hand():
  mask = np.arange(24).reshape(4, 6) % 7  # labels 0..6
  image = np.zeros((4, 6, 3), np.uint8)
  image[..., 0] = 40  # one colour: bilinear resizing keeps it everywhere
  # x2: an 8 x 12 image, each label a 2 x 2 block (nearest); the crop at (2, 3) keeps rows
  # 2..7 (6) and columns 3..11 (9) of a 10 x 10 window, the rest is padding.
  pixels, labels = finetune_data.scale_crop_pad(image, mask, 2.0, 2, 3, 10)
  assert pixels.shape == (10, 10, 3) and labels.shape == (10, 10) and labels.dtype == np.int32
  for r in range(10):
    for c in range(10):
      inside = r < 6 and c < 9
      want = mask[(r + 2) // 2, (c + 3) // 2] if inside else 255
      assert labels[r, c] == want, (r, c)
      assert pixels[r, c].tolist() == ([40, 0, 0] if inside else [124, 116, 104]), (r, c)
  # x0.5: a 2 x 3 image; nearest takes source pixel int((i + 0.5) * 2) = 2i + 1 per axis.
  _, labels = finetune_data.scale_crop_pad(image, mask, 0.5, 0, 0, 3)
  np.testing.assert_array_equal(labels, [mask[1, [1, 3, 5]], mask[3, [1, 3, 5]], [255] * 3])
  # x1 crops without resizing: pixels come through unchanged.
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
  pixels, _ = finetune_data.scale_crop_pad(image, np.zeros((5, 7), np.int32), 1.0, 1, 2, 3)
  np.testing.assert_array_equal(pixels, image[1:4, 2:5])


def test_random_crops_scale_between_half_and_double():
  mask = np.ones((20, 20), np.int32)  # label 1 everywhere: the unpadded part of a crop
  rng = np.random.default_rng(0)
  sides = []
  for _ in range(200):
    _, labels = finetune_data.random_scale_crop(np.zeros((20, 20, 3), np.uint8), mask, rng, 48)
    kept = labels != 255
    rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    # The scaled image sits in the top-left corner as one rectangle (10..40 pixels a side,
    # square here), padding elsewhere.
    assert kept.sum() == len(rows) * len(cols) and rows[0] == 0 and cols[0] == 0
    assert len(rows) == len(cols)
    assert set(np.unique(labels)) <= {1, 255}
    sides.append(len(rows))
  assert 10 <= min(sides) < 14 and 36 < max(sides) <= 40  # factors drawn over [0.5, 2]
  # A scaled image larger than the crop is cut at a random place: no padding.
  _, labels = finetune_data.random_scale_crop(
    np.zeros((100, 100, 3), np.uint8), np.ones((100, 100), np.int32), rng, 48
  )
  assert (labels == 1).all()


# --- The loss ---------------------------------------------------------------------------------


def test_pixel_cross_entropy_ignores_255_and_unknown_labels():
  # One patch, logits (0, ln 3): probabilities (1/4, 3/4) at every pixel after upsampling.
  logits = jnp.asarray([[[[0.0, math.log(3.0)]]]])  # [1, 1, 1, 2]
  labels = jnp.asarray([[[0, 1], [255, 7]]])  # 7 is no class of 2: ignored as 255 is
  loss = finetune_step.pixel_cross_entropy(logits, labels)
  assert float(loss) == pytest.approx((math.log(4.0) + math.log(4.0 / 3.0)) / 2, rel=1e-6)
  assert float(finetune_step.pixel_cross_entropy(logits, jnp.full((1, 2, 2), 255))) == 0.0


def test_pixel_cross_entropy_upsamples_bilinearly():
  # Two patch rows with logits (a, 0) and (b, 0) -> four pixel rows. align_corners=False
  # samples rows at (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped to 0 and 1):
  # a, (3a + b) / 4, (a + 3b) / 4, b.
  a, b = 2.0, -1.0
  logits = jnp.asarray([[[[a, 0.0]], [[b, 0.0]]]])  # [1, 2, 1, 2]
  labels = jnp.asarray([[[0], [0], [1], [1]]])  # [1, 4, 1]
  rows = [a, (3 * a + b) / 4, (a + 3 * b) / 4, b]

  def cross_entropy(x, label):  # two classes with logits (x, 0)
    return math.log(1 + math.exp(-x)) if label == 0 else math.log(1 + math.exp(x))

  want = np.mean([cross_entropy(x, y) for x, y in zip(rows, [0, 0, 1, 1])])
  assert float(finetune_step.pixel_cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)


# --- Per-patch features of both towers ----------------------------------------------------


@pytest.mark.parametrize('tower_name, vision', [('groupvit', GROUPVIT), ('vit', VIT)])
def test_patch_features_and_head(tower_name, vision):
  two_towers = checkpoint.build_model(model_config(tower_name, vision))
  variables = cheap_variables(checkpoint.variable_shapes(two_towers), 1, std=0.5)
  tower, tower_variables = image_tower(two_towers, variables)
  jax.tree.map(
    np.testing.assert_array_equal, tower_variables['params'], variables['params']['img_encoder']
  )
  model = SegmentationModel(tower, 5)
  kernel = np.random.default_rng(2).standard_normal((32, 5)).astype(np.float32)
  head = {'kernel': kernel, 'bias': np.ones(5, np.float32)}
  images = np.random.default_rng(3).standard_normal((2, 40, 24, 3))  # a 5 x 3 patch grid

  @jax.jit
  def forward(images):
    out = tower.apply(tower_variables, images)
    logits = model.apply({'params': {'tower': tower_variables['params'], 'head': head}}, images)
    return out, patch_features(out), logits

  out, features, logits = forward(images)
  assert features.shape == (2, 5, 3, 32) and logits.shape == (2, 5, 3, 5)
  tokens = np.asarray(out.tokens, np.float64)
  if tower_name == 'vit':
    want = tokens  # [B, 15, D], the patches themselves
  else:
    # Soft maps [B, 8, 15] (patches -> stage-1 groups) and [B, 4, 8] (-> final segments).
    first, second = (np.asarray(a.soft, np.float64) for a in out.assignments)
    to_segments = np.stack([second[i] @ first[i] for i in range(2)])  # [B, 4, 15]
    np.testing.assert_allclose(to_segments.sum(axis=1), 1.0, rtol=1e-5)  # each patch shared out
    want = np.stack([to_segments[i].T @ tokens[i] for i in range(2)])  # [B, 15, D]
  np.testing.assert_allclose(np.reshape(features, (2, 15, 32)), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits, features @ kernel + 1, rtol=1e-4, atol=1e-4)


# --- The command --------------------------------------------------------------------------


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('voc')
  return str(data_dir), write_synthetic_voc(str(data_dir), 32, 12)


def _most_frequent_label_miou(masks: dict) -> float:
  """The mIoU of predicting the train split's most frequent label at every val pixel."""
  label = np.bincount(masks['train'].ravel()).argmax()
  return mean_iou(np.full_like(masks['val'], label), masks['val'])


def test_finetune_vit_beats_the_most_frequent_label(scenes, tmp_path, capsys):
  data_dir, masks = scenes
  ckpt = save_tiny_checkpoint(tmp_path / 'vit', 'vit', VIT)
  workdir, json_path = tmp_path / 'work', tmp_path / 'result.json'
  args = ['--checkpoint', ckpt, '--dataset', 'voc', '--data_dir', data_dir]
  args += ['--workdir', str(workdir), '--json', str(json_path), '--workers', '2']
  args += ['--steps', '60', '--batch_size', '8', '--lr', '3e-3', '--crop_size', '32']
  args += ['--short_side', '64']
  assert finetune.main(args) == 0
  out, err = capsys.readouterr()
  assert 'voc: mIoU' in out and 'finetune: step 60/60 (100%) | loss' in err
  result = json.loads(json_path.read_text())
  assert result == json.loads((workdir / 'results.json').read_text())
  assert result['steps'] == 60 and result['image_tower'] == 'vit'
  assert result['num_train_images'] == 32 and result['num_val_images'] == 12
  assert result['per_class']['chair'] is None  # classes absent from the scenes: NaN -> null

  # The saved model gives the reported predictions; their mIoU, computed here, is the JSON's.
  segmenter, config = finetuned_model.load(str(workdir / 'model'), short_side=64)
  assert config['class_names'] == list(datasets.VOC_CLASSES)
  val = datasets.open_dataset('voc', data_dir, 'val')
  truth = np.stack([val.load(i)[1] for i in range(len(val))])
  pred = segmenter(np.stack([val.load(i)[0] for i in range(len(val))]))
  assert result['miou'] == pytest.approx(mean_iou(pred, truth), abs=1e-9)
  baseline = _most_frequent_label_miou(masks)  # 0.088: background is 79% of the pixels
  assert result['miou'] > 1.5 * baseline, (result['miou'], baseline)


@pytest.mark.slow
def test_finetune_groupvit_beats_the_most_frequent_label(scenes, tmp_path):
  data_dir, masks = scenes
  # One grouping stage with assignment logits x10 (configs/synthetic_tiny.py uses x30): at
  # scale 1 a random tower's assignments drown in the Gumbel noise and 300 steps barely move it.
  vision = dict(
    GROUPVIT, depths=(1, 1), num_group_tokens=(8, 0), num_output_groups=(8,), assign_scale=10.0
  )
  ckpt = save_tiny_checkpoint(tmp_path / 'groupvit', 'groupvit', vision)
  result = finetune.run(
    ckpt, 'voc', data_dir, str(tmp_path / 'work'), steps=300, batch_size=8, lr=3e-3,
    crop_size=32, short_side=64, workers=2,
  )  # fmt: skip
  assert result['image_tower'] == 'groupvit'
  baseline = _most_frequent_label_miou(masks)  # 0.089; seeds 0-3 reach 0.17, 0.12, 0.12, 0.23
  assert result['miou'] > 1.25 * baseline, (result['miou'], baseline)


def test_bad_input_is_one_line(scenes, tmp_path, capsys):
  data_dir, _ = scenes
  base = ['--dataset', 'voc', '--workdir', str(tmp_path / 'work')]
  missing = ['--checkpoint', str(tmp_path / 'none'), '--data_dir', data_dir]
  no_data = ['--checkpoint', str(tmp_path / 'none'), '--data_dir', str(tmp_path / 'nothing')]
  for args, words in ((missing, 'does not exist'), (no_data, 'not found')):
    assert finetune.main(base + args) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and words in err, err
  with pytest.raises(SystemExit):
    finetune.main(base + missing + ['--dataset', 'imagenet'])
  assert 'invalid choice' in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match='no fine-tuned segmentation model'):
    finetuned_model.load(data_dir)
