"""Boundary mIoU (evaluators/boundary.py) against hand-computed cases and a NumPy
implementation of the definition: d erosions by the 3 x 3 neighbourhood, the border as
background, per-class band intersections and unions over the non-ignored pixels."""

import math

import numpy as np
import pytest

from groupvit_jax.evaluators import boundary


def reference_band(mask: np.ndarray, d: int) -> np.ndarray:
  """The mask minus its erosion: d times, a pixel stays where all 9 pixels of its 3 x 3
  neighbourhood are in the mask, those outside the image counting as not."""
  h, w = mask.shape
  eroded = mask.copy()
  for _ in range(d):
    padded = np.zeros((h + 2, w + 2), bool)
    padded[1:-1, 1:-1] = eroded
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        eroded = eroded & padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
  return mask & ~eroded


def reference_counts(truth, prediction, num_classes, ignore_index=255):
  """Per-class band intersections and unions of one image, every class looked at."""
  h, w = truth.shape
  d = max(1, int(round(0.02 * math.sqrt(h * h + w * w))))
  valid = truth != ignore_index
  inter, union = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
  for c in range(num_classes):
    t, p = reference_band(truth == c, d), reference_band(prediction == c, d)
    inter[c] = (t & p & valid).sum()
    union[c] = ((t | p) & valid).sum()
  return inter, union


def reference_miou(pairs, num_classes) -> float:
  counts = [reference_counts(t, p, num_classes) for t, p in pairs]
  inter, union = sum(c[0] for c in counts), sum(c[1] for c in counts)
  return float(np.mean([i / u for i, u in zip(inter, union) if u > 0]))


def test_band_width_is_two_percent_of_the_diagonal_at_least_one():
  assert boundary.band_width(10, 10) == 1  # 0.02 * 14.1 = 0.28 -> 0, raised to 1
  assert boundary.band_width(54, 54) == 2  # 0.02 * 76.4 = 1.53
  assert boundary.band_width(45, 60) == 2  # 0.02 * 75 = 1.5, half to even as Python's round
  assert boundary.band_width(375, 500) == 12  # 0.02 * 625 = 12.5, half to even
  assert boundary.band_width(120, 160) == 4  # 0.02 * 200


def test_band_of_squares_inside_and_at_the_border():
  mask = np.zeros((54, 54), bool)
  mask[10:30, 20:40] = True
  # d = 2: a 20 x 20 square keeps its 16 x 16 inside; 400 - 256 = 144 band pixels.
  band = boundary.boundary_band(mask, 2)
  assert band.sum() == 144 and not band[12:28, 22:38].any() and not band[~mask].any()
  corner = np.zeros((54, 54), bool)
  corner[:10, :10] = True
  # The border is background: the 10 x 10 corner square erodes to rows and columns 2..7.
  band = boundary.boundary_band(corner, 2)
  assert band.sum() == 100 - 36 and not band[2:8, 2:8].any()
  assert not boundary.boundary_band(np.zeros((5, 5), bool), 1).any()
  assert boundary.boundary_band(np.ones((5, 5), bool), 1).sum() == 25 - 9


def test_hand_computed_boundary_miou_with_an_ignored_pixel():
  truth = np.zeros((5, 6), np.uint8)
  truth[1:4, 1:4] = 1
  prediction = np.zeros((5, 6), np.int32)
  prediction[1:4, 2:5] = 1  # the square one column to the right
  # d = round(0.02 * sqrt(61)) -> 1. Class 1: each 3 x 3 square's band is its ring of 8;
  # the rings share (1,2), (1,3), (3,2), (3,3): 4 / (8 + 8 - 4) = 1/3.
  # Class 0: every background pixel touches the border or the square, so each band is the
  # whole background (21 pixels each); 30 - 12 = 18 are background in both: 18 / 24 = 3/4.
  metric = boundary.BoundaryIoU(2)
  metric.update(None, truth, prediction)
  np.testing.assert_array_equal(metric.intersections, [18, 4])
  np.testing.assert_array_equal(metric.unions, [24, 12])
  assert metric.result(metric.counts())['boundary_miou'] == pytest.approx((1 / 3 + 3 / 4) / 2)

  # An ignored pixel at (0, 0) leaves class 0 with 20 truth-band and 20 counted prediction-band
  # pixels, 17 of them shared: 17 / 23. A second image adds its counts to the same sums.
  truth[0, 0] = 255
  metric = boundary.BoundaryIoU(2)
  metric.update(None, truth, prediction)
  assert metric.result(metric.counts())['boundary_miou'] == pytest.approx((1 / 3 + 17 / 23) / 2)
  metric.update(None, np.ones((5, 6), np.uint8), np.ones((5, 6), np.int32))
  # All ones: class 1's band is the border ring, 30 - 12 = 18 pixels in both.
  np.testing.assert_array_equal(metric.intersections, [17, 4 + 18])
  np.testing.assert_array_equal(metric.unions, [23, 12 + 18])


def _blocky_labels(rng, h, w, num_classes):
  """A label map of random blocks (nearest-neighbour upsampled noise)."""
  coarse = rng.integers(0, num_classes, (rng.integers(1, 6), rng.integers(1, 6)))
  return coarse[np.arange(h) * coarse.shape[0] // h][:, np.arange(w) * coarse.shape[1] // w]


def test_boundary_miou_equals_the_reference_over_random_maps_and_sums_over_shares():
  rng = np.random.default_rng(0)
  num_classes = 5
  sizes = [(7, 9), (30, 40), (54, 54), (80, 100), (90, 130), (120, 160)]  # d = 1, 1, 2, 3, 3, 4
  pairs = []
  for n in range(240):
    h, w = sizes[n % len(sizes)]
    truth = _blocky_labels(rng, h, w, num_classes).astype(np.uint8)
    prediction = _blocky_labels(rng, h, w, num_classes) if n % 3 else truth.astype(np.int32)
    noise = rng.random((h, w)) < 0.05  # scattered wrong labels: thin bands everywhere
    prediction = np.where(noise, rng.integers(0, num_classes, (h, w)), prediction)
    truth[rng.random((h, w)) < 0.03] = 255
    if n % 7 == 0:
      truth[: h // 3] = 255  # a whole ignored strip
    pairs.append((truth, prediction))

  for truth, prediction in pairs[:60]:  # the per-image counts themselves
    metric = boundary.BoundaryIoU(num_classes)
    metric.update(None, truth, prediction)
    want = reference_counts(truth, prediction, num_classes)
    np.testing.assert_array_equal(metric.counts(), want)

  whole = boundary.BoundaryIoU(num_classes)
  halves = [boundary.BoundaryIoU(num_classes), boundary.BoundaryIoU(num_classes)]
  for n, (truth, prediction) in enumerate(pairs):
    whole.update(None, truth, prediction)
    halves[n % 2].update(None, truth, prediction)
  got = whole.result(whole.counts())['boundary_miou']
  assert got == pytest.approx(reference_miou(pairs, num_classes), abs=1e-12)
  summed = [a + b for a, b in zip(halves[0].counts(), halves[1].counts())]
  assert whole.result(summed)['boundary_miou'] == got  # what process_sum hands over


def test_empty_unions_are_left_out_and_bad_input_is_refused():
  metric = boundary.BoundaryIoU(4)
  metric.update(None, np.full((6, 6), 255, np.uint8), np.zeros((6, 6), np.int32))
  assert math.isnan(metric.result(metric.counts())['boundary_miou'])  # nothing counted
  # Class 3 appears nowhere; classes 1 and 2 in one image each, predicted right: mean of 1, 1.
  metric.update(None, np.ones((6, 6), np.uint8), np.ones((6, 6), np.int32))
  metric.update(None, np.full((6, 6), 2, np.uint8), np.full((6, 6), 2, np.int32))
  assert metric.unions[3] == 0 and metric.result(metric.counts())['boundary_miou'] == 1.0
  with pytest.raises(ValueError, match='differ in size'):
    metric.update(None, np.ones((6, 6), np.uint8), np.ones((6, 5), np.int32))
