"""The oracle mIoU and mask probing (evaluators/group_metrics.py) on hand-computed cases, and
how the segmentation evaluator's loop feeds them (evaluators/zero_shot_segmentation.py)."""

import math
import types

import numpy as np
import pytest

from groupvit_jax.evaluators import group_metrics, zero_shot_segmentation

GROUPS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 3]])
TRUTH = np.array([[1, 1, 2, 2], [1, 0, 0, 2], [0, 255, 2, 255]], np.uint8)


def test_each_group_takes_the_class_most_of_its_pixels_have():
  # Group 0: classes 1, 1, 1, 0 -> 1. Group 1: 2, 2, 0, 2 -> 2. Group 2: 0, (255), 2 -> a tie
  # of 0 and 2 -> the lower, 0. Group 3: only an ignored pixel -> 0.
  want = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
  np.testing.assert_array_equal(group_metrics.majority_labels(GROUPS, TRUTH, 3), want)
  # A label outside the classes does not vote: group 1 would be 9's without that rule.
  truth = np.where(GROUPS == 1, 9, TRUTH)
  truth[0, 2] = 2
  assert (group_metrics.majority_labels(GROUPS, truth, 3)[GROUPS == 1] == 2).all()


def test_hand_computed_oracle_miou():
  oracle = group_metrics.OracleIoU(['a', 'b', 'c'])
  assert oracle.needs_groups
  oracle.update(None, TRUTH, None, GROUPS)
  # Over the 10 counted pixels, (truth, oracle label): (1,1) x3, (0,1), (2,2) x3, (0,2), (0,0),
  # (2,0). Class 0: 1 / (3 + 2 - 1); class 1: 3 / (3 + 4 - 3); class 2: 3 / (4 + 4 - 3).
  want = (1 / 4 + 3 / 4 + 3 / 5) / 3
  assert oracle.result(oracle.counts())['oracle_miou'] == pytest.approx(want)
  # A second image, one group over two classes (3 pixels of c, 1 of a): c everywhere.
  oracle.update(None, np.array([[2, 2], [2, 0]]), None, np.zeros((2, 2), int))
  # Class 0: 1 / (4 + 2 - 1) = 1/5; class 1 unchanged; class 2: 6 / (7 + 8 - 6) = 2/3.
  want = (1 / 5 + 3 / 4 + 2 / 3) / 3
  assert oracle.result(oracle.counts())['oracle_miou'] == pytest.approx(want)
  with pytest.raises(ValueError, match='differ in size'):
    oracle.update(None, TRUTH, None, GROUPS[:2])


def test_mask_probing_takes_each_images_best_group_and_skips_empty_foreground():
  probing = group_metrics.MaskProbing()
  assert probing.needs_groups
  truth = np.array([[0, 0, 5, 5], [0, 5, 5, 255], [0, 0, 0, 0]])
  groups = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 2]])
  # Group 1 covers the 4 foreground pixels and the ignored one: 4 / 4 (4 / 5 if it counted).
  probing.update(None, truth, None, groups)
  # Foreground (0,0), (0,1), (1,0). Group 0 (top row): 2 / 4; group 1 (bottom row): 1 / 5.
  probing.update(None, np.array([[3, 3, 0], [3, 0, 0]]), None, np.array([[0, 0, 0], [1, 1, 1]]))
  # Only background and ignored pixels: not counted.
  probing.update(None, np.array([[0, 255], [0, 0]]), None, np.zeros((2, 2), int))
  assert probing.result(probing.counts()) == {
    'mask_probing_jaccard': (1 + 0.5) / 2,
    'mask_probing_images': 2,
  }
  empty = group_metrics.MaskProbing()
  empty.update(None, np.zeros((2, 2)), None, np.zeros((2, 2), int))
  assert math.isnan(empty.result(empty.counts())['mask_probing_jaccard'])


def test_dino_masks_keep_the_most_attended_patches_holding_60_percent():
  attention = np.array(
    [
      [[1, 2], [3, 4]],  # shares .1 .2 .3 .4: the top two hold .7, the top one .4 < .6
      [[5, 1], [1, 3]],  # .5 .1 .1 .3: the top two hold .8
      [[7, 3], [6, 4]],  # .35 .15 .3 .2: the top two hold .65
    ],
    np.float32,
  )
  want = [[[0, 0], [1, 1]], [[1, 0], [0, 1]], [[1, 0], [1, 0]]]
  np.testing.assert_array_equal(group_metrics.attention_masks(attention), want)
  np.testing.assert_array_equal(group_metrics.attention_masks(attention * 1e-3), want)
  # Asking for 70%: the third head needs its top three (.35 + .3 + .2 = .85; two hold .65).
  np.testing.assert_array_equal(group_metrics.attention_masks(attention, 0.7)[2], [[1, 0], [1, 1]])


def test_nearest_upsampling_gives_each_pixel_its_cell():
  grid = np.arange(6).reshape(3, 2)
  # Rows: floor(y * 3 / 7) for y = 0..6 -> 0 0 0 1 1 2 2; columns: floor(x * 2 / 5) -> 0 0 0 1 1.
  rows, cols = [0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1]
  np.testing.assert_array_equal(
    group_metrics.upsample_nearest(grid, (7, 5)), grid[np.ix_(rows, cols)]
  )
  assert group_metrics.upsample_nearest(np.ones((2, 3, 2), bool), (4, 4)).shape == (2, 4, 4)


class FakeViT:
  """A ViT's inference API as far as mask probing reads it: CLS attention [B, heads, gh, gw]."""

  config = {'image_tower': 'vit'}

  def __init__(self, attention):
    self.attention, self.shapes = np.asarray(attention, np.float32), []

  def cls_attention(self, images):
    self.shapes.append(images.shape)
    return np.repeat(self.attention[None], len(images), axis=0)


def test_vit_mask_probing_takes_the_best_heads_mask():
  vit = FakeViT([[[1, 2], [3, 4]], [[5, 1], [1, 3]]])  # bottom half; top-left + bottom-right
  probing = group_metrics.MaskProbing(group_metrics.head_masks(vit, None))
  assert not probing.needs_groups
  image = np.zeros((4, 4, 3), np.uint8)
  truth = np.zeros((4, 4), np.uint8)
  truth[2:, :2] = 7  # the foreground: the bottom-left quadrant
  probing.update(image, truth, None)  # head 0: 4 / 8; head 1: 0
  truth[2:, 2:] = 255  # ignoring the bottom-right quadrant: head 0 4 / 4
  probing.update(image, truth, None)
  assert probing.result(probing.counts())['mask_probing_jaccard'] == pytest.approx(0.75)
  assert vit.shapes == [(1, 4, 4, 3)] * 2

  # At a shorter side of 8, the 4 x 6 image reaches the model as 8 x 12; masks at 4 x 6.
  masks = group_metrics.head_masks(vit, 8)(np.zeros((4, 6, 3), np.uint8))
  assert vit.shapes[-1] == (1, 8, 12, 3) and masks.shape == (2, 4, 6)


class FakeSegmenter:
  """A segmenter that labels every pixel 1, and a GroupViT whose groups are two halves."""

  num_labels, short_side = 3, 32

  def __init__(self):
    self.calls = []

    def group_maps(image, short_side):
      self.calls.append((image.shape, short_side))
      groups = np.zeros(image.shape[:2], np.int32)
      groups[:, image.shape[1] // 2 :] = 1
      return [np.zeros_like(groups), groups]  # stage 1, stage 2 (the final one)

    self.inference = types.SimpleNamespace(config={}, group_maps=group_maps)

  def __call__(self, images):
    return np.ones(images.shape[:3], np.int32)


def test_the_evaluator_feeds_the_final_groups_only_to_metrics_that_need_them():
  truth = np.zeros((6, 8), np.uint8)
  truth[:, 4:] = 2
  examples = [
    (np.zeros((6, 8, 3), np.uint8), truth, 'a'),
    (np.zeros((6, 8, 3), np.uint8), truth, 'b'),
  ]
  names = ['background', 'x', 'y']
  segmenter = FakeSegmenter()
  result = zero_shot_segmentation.evaluate(segmenter, examples, names, metric_names=('boundary',))
  assert 'boundary_miou' in result and not segmenter.calls  # no groups computed
  result = zero_shot_segmentation.evaluate(
    segmenter, examples, names, metric_names='oracle,mask_probing'
  )
  assert segmenter.calls == [((6, 8, 3), 32)] * 2  # each image once, at the segmenter's side
  # The final groups are the truth's two halves: the oracle is perfect on classes 0 and 2
  # (class 1, absent from truth and oracle, is NaN and skipped); the right half matches the
  # foreground exactly.
  assert result['oracle_miou'] == 1.0 and result['miou'] == 0.0
  assert result['mask_probing_jaccard'] == 1.0 and result['mask_probing_images'] == 2


def test_extra_metrics_refuse_what_a_model_or_dataset_cannot_give():
  vit, groupvit = FakeViT(np.ones((1, 2, 2))), types.SimpleNamespace(config={})
  names = ['background', 'cat']
  with pytest.raises(ValueError, match='oracle needs a model with groups'):
    zero_shot_segmentation.extra_metrics(['oracle'], vit, names, 448)
  (probing,) = zero_shot_segmentation.extra_metrics(['mask_probing'], vit, names, 448)
  assert not probing.needs_groups  # the heads' masks
  with pytest.raises(ValueError, match="class 0 is 'background'"):
    zero_shot_segmentation.extra_metrics(['mask_probing'], groupvit, ['cat', 'dog'], 448)
  with pytest.raises(ValueError, match='unknown metric'):
    zero_shot_segmentation.extra_metrics(['edges'], groupvit, names, 448)
  extras = zero_shot_segmentation.extra_metrics('boundary,oracle', groupvit, names, 448)
  assert [type(e).__name__ for e in extras] == ['BoundaryIoU', 'OracleIoU']
