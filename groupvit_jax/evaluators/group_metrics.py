"""How good the groups themselves are, whatever classes the text gives them: the oracle mIoU
(supplement Table 3) and mask probing (supplement Table 2, DINO's protocol).

Both are accumulators like boundary.BoundaryIoU: `update(image, truth, prediction, groups)` per
image, with `groups` the final stage's group of each pixel (int [H, W]) where `needs_groups`;
`counts()` for the sum over processes; `result(counts)` for the numbers.
"""

from typing import Callable

import numpy as np

from groupvit_jax import segmentation
from groupvit_jax.evaluators import metrics

DINO_MASS = 0.6  # a head's mask: its most attended patches holding 60% of its attention


def has_groups(inference) -> bool:
  """Whether the model's image tower makes groups (GroupViT), unlike a plain ViT."""
  return inference.config.get('image_tower', 'groupvit') != 'vit'


def majority_labels(groups: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index=255):
  """int [H, W]: each group's pixels labelled with the class most of its pixels have in the
  truth, ignored pixels and labels outside [0, num_classes) left out (ties: the lowest class;
  a group of only such pixels: 0)."""
  groups, truth = np.asarray(groups, np.int64), np.asarray(truth, np.int64)
  valid = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
  num_groups = int(groups.max()) + 1
  votes = np.bincount(
    groups[valid] * num_classes + truth[valid], minlength=num_groups * num_classes
  ).reshape(num_groups, num_classes)  # [groups, classes]
  return np.argmax(votes, axis=1)[groups]  # argmax: the first (lowest) class of a tie


class OracleIoU:
  """The mIoU of the label maps in which each final group takes the ground-truth class that
  overlaps it most: how well the groups could score if their classes were known.

  The supplement gives each group the class of maximum IoU with it; this follows the issue's
  "the class it overlaps most" (most pixels), which favours large classes where they differ.
  """

  needs_groups = True

  def __init__(self, class_names, ignore_index: int = 255):
    self.class_names, self.ignore_index = tuple(class_names), ignore_index
    num_classes = len(self.class_names)
    self.confusion = np.zeros((num_classes, num_classes), np.int64)

  def update(self, image, truth, prediction, groups: np.ndarray) -> None:
    del image, prediction  # the oracle labels the groups, not the zero-shot prediction
    if np.shape(groups) != np.shape(truth):
      raise ValueError(f'groups {np.shape(groups)} and truth {np.shape(truth)} differ in size')
    num_classes = len(self.class_names)
    labels = majority_labels(groups, truth, num_classes, self.ignore_index)
    self.confusion += metrics.confusion_matrix(labels, truth, num_classes, self.ignore_index)

  def counts(self) -> np.ndarray:
    return self.confusion

  def result(self, confusion) -> dict:
    return {'oracle_miou': metrics.segmentation_metrics(confusion, self.class_names)['miou']}


def best_jaccard(masks: np.ndarray, foreground: np.ndarray, valid: np.ndarray) -> float:
  """The highest Jaccard index of candidate masks bool [K, H, W] with `foreground` [H, W],
  counting only `valid` pixels."""
  intersections = np.count_nonzero(masks & (foreground & valid), axis=(1, 2))
  unions = np.count_nonzero((masks | foreground) & valid, axis=(1, 2))
  return float(np.max(intersections / np.maximum(unions, 1)))


def attention_masks(attention: np.ndarray, mass: float = DINO_MASS) -> np.ndarray:
  """DINO's masks: per head of float [heads, gh, gw], the most attended patches that together
  hold `mass` of its attention (normalised to 1), as bool [heads, gh, gw]."""
  heads = attention.shape[0]
  weights = np.asarray(attention, np.float64).reshape(heads, -1)  # [heads, gh * gw]
  weights = weights / weights.sum(axis=1, keepdims=True)
  order = np.argsort(weights, axis=1, kind='stable')  # ascending
  cumulative = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
  keep = np.zeros(weights.shape, bool)
  # The least attended patches up to 1 - mass of the attention drop out; the rest stay.
  np.put_along_axis(keep, order, cumulative > 1 - mass, axis=1)
  return keep.reshape(attention.shape)


def upsample_nearest(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """[..., gh, gw] -> [..., H, W]: each pixel takes the cell it falls in (nearest neighbour)."""
  gh, gw = masks.shape[-2:]
  rows = np.arange(hw[0]) * gh // hw[0]
  cols = np.arange(hw[1]) * gw // hw[1]
  return masks[..., rows[:, None], cols]


def head_masks(inference, short_side: int | None) -> Callable[[np.ndarray], np.ndarray]:
  """For a ViT: image uint8 [H, W, 3] -> bool [heads, H, W], each head's DINO mask of its
  last-block CLS attention, the image resized to a `short_side` shorter side first."""

  def masks(image: np.ndarray) -> np.ndarray:
    resized = segmentation.rescale_images(np.asarray(image)[None], short_side)
    attention = np.asarray(inference.cls_attention(resized))[0]  # [heads, gh, gw]
    return upsample_nearest(attention_masks(attention), image.shape[:2])

  return masks


class MaskProbing:
  """The mean over images of the best Jaccard index of a candidate mask with the foreground
  (truth neither 0, background, nor ignored; ignored pixels left out): the candidates are the
  final groups, or, given `candidates` (e.g. head_masks for a ViT), the masks it makes of the
  image. Images without foreground are not counted."""

  def __init__(
    self,
    candidates: Callable[[np.ndarray], np.ndarray] | None = None,
    background: int = 0,
    ignore_index: int = 255,
  ):
    self.candidates, self.background, self.ignore_index = candidates, background, ignore_index
    self.needs_groups = candidates is None
    self.total = np.zeros((), np.float64)  # the sum of the images' best Jaccard indices
    self.images = np.zeros((), np.int64)

  def update(self, image, truth, prediction, groups=None) -> None:
    del prediction
    truth = np.asarray(truth)
    valid = truth != self.ignore_index
    foreground = valid & (truth != self.background)
    if not foreground.any():
      return
    if self.candidates is None:
      groups = np.asarray(groups)
      masks = groups[None] == np.unique(groups)[:, None, None]  # [groups, H, W]
    else:
      masks = self.candidates(image)
    if masks.shape[1:] != truth.shape:
      raise ValueError(f'masks {masks.shape[1:]} and truth {truth.shape} differ in size')
    self.total += best_jaccard(masks, foreground, valid)
    self.images += 1

  def counts(self) -> tuple[np.ndarray, np.ndarray]:
    return self.total, self.images

  @staticmethod
  def result(counts) -> dict:
    """{'mask_probing_jaccard': the mean (NaN without images), 'mask_probing_images'}."""
    total, images = (np.asarray(c) for c in counts)
    jaccard = float(total / images) if images else float('nan')
    return {'mask_probing_jaccard': jaccard, 'mask_probing_images': int(images)}
