"""Training crops for fully-supervised transfer (supplement 1.2): each image scaled by a random
factor in [0.5, 2] (image bilinear, mask nearest), then a random crop_size x crop_size crop,
padded at the bottom and right where the scaled image is smaller. No other augmentation: the
supplement names none.

Padding is labelled 255 (ignored) and coloured with the ImageNet mean, which normalisation maps
to 0 (within 0.01): mmseg pads normalised images with 0. Resizing is Pillow's, whose bilinear
filter smooths when it shrinks (mmcv's OpenCV resize samples without smoothing).
"""

import itertools
from typing import Iterator

import numpy as np
from PIL import Image

from groupvit_jax.evaluators import datasets
from groupvit_jax.image_ops import IMAGENET_MEAN

IGNORE_LABEL = 255
PAD_PIXEL = tuple(round(255 * m) for m in IMAGENET_MEAN)  # (124, 116, 104)
SCALE_RANGE = (0.5, 2.0)


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
  """The image size after scaling by `factor`, rounded, at least one pixel."""
  return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def scale_crop_pad(
  image: np.ndarray, mask: np.ndarray, factor: float, top: int, left: int, crop_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [H, W, 3] and labels [H, W] scaled by `factor`, cut at (top, left) to crop_size
  square, padded (PAD_PIXEL, IGNORE_LABEL) where the scaled image ends: (uint8 [c, c, 3],
  int32 [c, c])."""
  height, width = scaled_size(*mask.shape, factor)
  pixels = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
  labels = np.asarray(
    Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST), np.int32
  )
  out_pixels = np.empty((crop_size, crop_size, 3), np.uint8)
  out_pixels[:] = PAD_PIXEL
  out_labels = np.full((crop_size, crop_size), IGNORE_LABEL, np.int32)
  kept = pixels[top : top + crop_size, left : left + crop_size]
  h, w = kept.shape[:2]
  out_pixels[:h, :w] = kept
  out_labels[:h, :w] = labels[top : top + crop_size, left : left + crop_size]
  return out_pixels, out_labels


def random_scale_crop(
  image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """scale_crop_pad at a uniform factor in SCALE_RANGE and a uniform crop position."""
  factor = rng.uniform(*SCALE_RANGE)
  height, width = scaled_size(*mask.shape, factor)
  top = int(rng.integers(0, max(height - crop_size, 0) + 1))
  left = int(rng.integers(0, max(width - crop_size, 0) + 1))
  return scale_crop_pad(image, mask, factor, top, left, crop_size)


def _example_order(num_examples: int, seed: int) -> Iterator[int]:
  """Example indices forever: one seeded permutation of the split per epoch."""
  for epoch in itertools.count():
    yield from np.random.default_rng([seed, 0, epoch]).permutation(num_examples).tolist()


def training_batches(
  dataset: datasets.SegmentationDataset,
  batch_size: int,
  crop_size: int,
  seed: int,
  workers: int = 8,
) -> Iterator[dict]:
  """Batches {'image': uint8 [B, c, c, 3], 'mask': int32 [B, c, c]} of random crops, forever.

  Example k of the stream is cut with its own generator (seed, 1, k), so the stream does not
  depend on the number of reading threads.
  """

  def load(draw):
    number, index = draw
    image, mask = dataset.load(index)
    return random_scale_crop(image, mask, np.random.default_rng([seed, 1, number]), crop_size)

  examples = datasets.prefetch(load, enumerate(_example_order(len(dataset), seed)), workers)
  while True:
    crops = list(itertools.islice(examples, batch_size))
    yield {
      'image': np.stack([image for image, _ in crops]),
      'mask': np.stack([mask for _, mask in crops]),
    }
