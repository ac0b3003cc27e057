"""Boundary mIoU (Cheng et al., CVPR 2021; the paper's Table 3): the IoU of the label maps'
boundary bands instead of their whole masks, so that it scores how well the edges sit.

A binary mask's band of width d is the mask minus its erosion by a 3 x 3 square repeated d
times, the image border counting as background; d is 2% of the image diagonal, rounded, at
least 1. Per class, the band of the truth's mask and the band of the prediction's mask are
intersected and united over the pixels whose truth is not ignored; the counts are summed over
the split and the mean is over the classes whose union is not empty.
"""

import numpy as np
from scipy import ndimage

BAND_FRACTION = 0.02  # of the image diagonal


def band_width(height: int, width: int) -> int:
  """d: 2% of the diagonal of a height x width image, rounded (half to even, as Python's
  round), at least 1."""
  return max(1, int(round(BAND_FRACTION * np.hypot(height, width))))


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
  """bool [H, W]: the pixels of `mask` within `width` steps (3 x 3 neighbourhoods) of a pixel
  outside it or of the image border."""
  mask = np.asarray(mask, bool)
  # d erosions by a 3 x 3 square = one (2d + 1) x (2d + 1) minimum; outside the image is 0.
  eroded = ndimage.minimum_filter(mask.view(np.uint8), size=2 * width + 1, mode='constant')
  return mask & (eroded == 0)


class BoundaryIoU:
  """Accumulates per-class boundary-band intersections and unions over a split:
  `update` per image, `counts()` to sum over processes, `result(counts)` for the mean."""

  needs_groups = False

  def __init__(self, num_classes: int, ignore_index: int = 255):
    self.num_classes, self.ignore_index = num_classes, ignore_index
    self.intersections = np.zeros(num_classes, np.int64)
    self.unions = np.zeros(num_classes, np.int64)

  def update(self, image, truth: np.ndarray, prediction: np.ndarray, groups=None) -> None:
    """Adds one image's bands; truth and prediction are int label maps [H, W]."""
    del image, groups  # the bands depend on the label maps only
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    if truth.shape != prediction.shape:
      raise ValueError(f'truth {truth.shape} and prediction {prediction.shape} differ in size')
    width = band_width(*truth.shape)
    valid = truth != self.ignore_index
    present = np.union1d(np.unique(truth[valid]), np.unique(prediction))
    for c in present[(present >= 0) & (present < self.num_classes)]:
      truth_band = boundary_band(truth == c, width)[valid]
      predicted_band = boundary_band(prediction == c, width)[valid]
      self.intersections[c] += np.count_nonzero(truth_band & predicted_band)
      self.unions[c] += np.count_nonzero(truth_band | predicted_band)

  def counts(self) -> tuple[np.ndarray, np.ndarray]:
    """(intersections, unions), int64 [C] each: what processes sum."""
    return self.intersections, self.unions

  @staticmethod
  def result(counts) -> dict:
    """{'boundary_miou': mean over classes with a non-empty union} (NaN when none has one)."""
    intersections, unions = (np.asarray(c) for c in counts)
    seen = unions > 0
    miou = float(np.mean(intersections[seen] / unions[seen])) if seen.any() else float('nan')
    return {'boundary_miou': miou}
