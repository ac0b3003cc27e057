"""Zero-shot segmentation evaluator: metrics, resize, group maps, scoring, windows, end to end."""

import numpy as np
import pytest
import torch

import groupvit_jax
from groupvit_jax import segmentation
from groupvit_jax.evaluators import metrics
from groupvit_jax.evaluators import zero_shot_segmentation as zss

import hf_reference as ref


def _softmax(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def test_metrics_hand_computed_with_ignore_and_absent_class():
  label = np.array([[0, 0, 1], [1, 255, 2]])
  pred = np.array([[0, 1, 1], [1, 3, 0]])  # the 3 sits on an ignored pixel
  conf = metrics.confusion_matrix(pred, label, 4)
  expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
  np.testing.assert_array_equal(conf, expected)
  assert conf.dtype == np.int64

  m = metrics.segmentation_metrics(conf, ['a', 'b', 'c', 'd'])
  # IoU: a 1/(1+1+1), b 2/(2+1+0), c 0/(0+0+1), d absent everywhere -> NaN, excluded.
  assert m['miou'] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
  assert m['macc'] == pytest.approx((1 / 2 + 1 + 0) / 3)
  assert m['aacc'] == pytest.approx(3 / 5)
  assert m['per_class']['a'] == pytest.approx(1 / 3)
  assert np.isnan(m['per_class']['d'])

  # Predicted but absent from the ground truth: IoU 0 counts, accuracy NaN does not.
  m = metrics.segmentation_metrics(metrics.confusion_matrix([0, 1], [0, 0], 2), ['a', 'b'])
  assert m['per_class'] == {'a': 0.5, 'b': 0.0}
  assert m['miou'] == pytest.approx(0.25)
  assert m['macc'] == pytest.approx(0.5)


@pytest.mark.parametrize('in_hw,out_hw', [((3, 5), (7, 11)), ((17, 13), (5, 4)), ((6, 6), (6, 6))])
def test_bilinear_resize_matches_torch(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2, 3, *in_hw)).astype(np.float32)
  want = torch.nn.functional.interpolate(
    torch.from_numpy(x), size=out_hw, mode='bilinear', align_corners=False
  ).numpy()
  np.testing.assert_allclose(segmentation.bilinear_resize(x, out_hw), want, atol=1e-5)


def test_group_to_pixel_assignment_matches_numpy():
  rng = np.random.default_rng(1)
  b, n, grid, out_hw = 2, 12, (3, 4), (7, 9)
  stage1 = _softmax(rng.normal(size=(b, 8, n)), axis=1).astype(np.float32)  # [B, 8, N]
  stage2 = _softmax(rng.normal(size=(b, 4, 8)), axis=1).astype(np.float32)  # [B, 4, 8]
  got = np.asarray(segmentation.group_to_pixel_assignment((stage1, stage2), grid, out_hw))

  # Patch n goes to final group g with weight sum_k stage1[k, n] * stage2[g, k].
  product = np.zeros((b, 4, n), np.float32)
  for i in range(b):
    for g in range(4):
      for p in range(n):
        product[i, g, p] = sum(stage1[i, k, p] * stage2[i, g, k] for k in range(8))
  maps = torch.nn.functional.interpolate(
    torch.from_numpy(product.reshape(b, 4, *grid)), size=out_hw, mode='bilinear'
  ).numpy()
  want = np.eye(4)[maps.argmax(axis=1)].transpose(0, 3, 1, 2)  # [B, 4, H, W]
  np.testing.assert_array_equal(got, want)


def test_background_rule_on_hand_made_group_class_matrix():
  scores = np.array([[[0.5, 0.2, 0.1], [0.3, 0.1, 0.05]]], np.float32)  # [1, S=2, C=3]
  group_map = np.zeros((1, 2, 1, 2), np.float32)
  group_map[0, 0, 0, 0] = group_map[0, 1, 0, 1] = 1  # left pixel group 0, right group 1

  def label(t):
    return np.asarray(segmentation.pixel_scores(group_map, scores, t).argmax(axis=1))[0, 0]

  # Threshold min(0.95, 0.5): the left pixel (0.5) is not below it, the right one (0.3) is.
  np.testing.assert_array_equal(label(0.95), [1, 0])
  np.testing.assert_array_equal(label(0.4), [1, 0])
  np.testing.assert_array_equal(label(0.25), [1, 1])
  np.testing.assert_array_equal(label(None), [0, 0])  # no background class


def test_top5_masking_with_seven_classes():
  rng = np.random.default_rng(2)
  class_emb = np.eye(7, dtype=np.float32)  # logits are then scale * embedding coordinates
  image = np.array([[0.1, 0.9, 0.3, 0.8, 0.05, 0.7, 0.6]], np.float32)  # drops classes 0, 4
  groups = rng.normal(size=(1, 3, 7)).astype(np.float32)
  got = np.asarray(segmentation.group_class_scores(groups, image, class_emb, 10.0))

  logits = 10.0 * groups
  keep = np.array([False, True, True, True, False, True, True])
  masked = np.where(keep, logits, -np.inf)
  want = _softmax(masked, axis=-1) * _softmax(logits, axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert (got[..., ~keep] == 0).all()


def test_sliding_windows_average_overlaps():
  h, w, window, stride = 10, 13, 6, 4
  images = np.random.default_rng(3).normal(size=(2, h, w, 3)).astype(np.float32)

  def fn(crops):  # depends on position inside the crop, so overlaps disagree
    ch, cw = crops.shape[1:3]
    ramp = np.arange(ch)[:, None] + 10 * np.arange(cw)[None, :]
    return np.stack([crops[..., 0] * ramp, crops[..., 1] + ramp], axis=1)  # [B, 2, h, w]

  boxes = segmentation.window_boxes(h, w, window, stride)
  scores = np.stack([fn(images[:, t:b, lf:r]) for t, lf, b, r in boxes])  # [K, B, 2, h, w]
  got = segmentation.average_windows(scores, boxes, (h, w))
  # Independent count: window origins every `stride`, the last shifted back to fit.
  ys = sorted({min(y, h - window) for y in range(0, h - window + stride, stride)})
  xs = sorted({min(x, w - window) for x in range(0, w - window + stride, stride)})
  assert sorted(boxes) == [(y, x, y + window, x + window) for y in ys for x in xs]
  total, count = np.zeros((2, 2, h, w)), np.zeros((h, w))
  for y in ys:
    for x in xs:
      total[:, :, y : y + window, x : x + window] += fn(images[:, y : y + window, x : x + window])
      count[y : y + window, x : x + window] += 1
  assert count.min() >= 1 and count.max() > 1
  np.testing.assert_allclose(got, total / count, rtol=1e-5, atol=1e-5)

  # A window larger than the image is one crop, the whole image; a short side, one row.
  assert segmentation.window_boxes(h, w, 448, 224) == ((0, 0, h, w),)
  assert segmentation.window_boxes(448, 600, 448, 224) == ((0, 0, 448, 448), (0, 152, 448, 600))


def test_run_end_to_end_on_tiny_random_model(tmp_path):
  # A converted random transformers model: quicker here than compiling GroupViT.init.
  ref.make_model(seed=0, **ref.TINY).save_pretrained(tmp_path)
  inference = groupvit_jax.load(str(tmp_path))

  rng = np.random.default_rng(4)
  images = rng.integers(0, 256, size=(2, 32, 40, 3), dtype=np.uint8)
  masks = rng.integers(0, 3, size=(2, 32, 40)).astype(np.uint8)
  masks[:, :4] = 255
  names = ['background', 'cat', 'dog']
  # Both runs feed 32 px windows (one compile): two overlapping across the 40 px width, then
  # 3 x 2 on the images resized to a 48 px shorter side (scores resized back to the masks).
  result = zss.run(
    inference, images, masks, names, 0.95, window=32, stride=8, return_predictions=True
  )
  assert set(result) >= {'miou', 'macc', 'aacc', 'per_class', 'predictions'}
  assert 0 <= result['miou'] <= 1 and 0 <= result['aacc'] <= 1
  assert result['confusion_matrix'].sum() == (masks != 255).sum()
  preds = result['predictions']
  assert len(preds) == 2 and preds[0].shape == (32, 40) and preds[0].dtype == np.int32
  assert all(p.min() >= 0 and p.max() < 3 for p in preds)

  resized = zss.run(
    inference,
    list(images),
    list(masks),
    names,
    0.95,
    batch_size=1,
    window=32,
    stride=16,
    short_side=48,
    return_predictions=True,
  )
  assert [p.shape for p in resized['predictions']] == [(32, 40)] * 2

  perfect = sum(metrics.confusion_matrix(p, p, 3) for p in preds)
  present = np.diag(perfect) > 0
  m = metrics.segmentation_metrics(perfect, names)
  assert m['miou'] == m['macc'] == m['aacc'] == 1.0
  assert np.isnan(np.array(list(m['per_class'].values()))[~present]).all()
