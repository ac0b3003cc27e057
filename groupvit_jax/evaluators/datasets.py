"""Zero-shot segmentation datasets, read from the layouts mmsegmentation prepares.

  voc          VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette indices),
               ImageSets/Segmentation/val.txt}
  context      VOCdevkit/VOC2010/{JPEGImages/*.jpg, SegmentationClassContext/*.png (0..59),
               ImageSets/SegmentationContext/val.txt}
  coco_object  coco/{images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png (0..80)}

`data_dir` may be the dataset's own directory (e.g. .../VOCdevkit/VOC2012) or any directory
above it on that path (e.g. the one holding VOCdevkit). Class names and background thresholds
are the released evaluation's (GROUPVIT_FACTS.md); label 255 is ignored.

  dataset = open_dataset('voc', '/data')
  image, mask = dataset.load(0)  # uint8 [H, W, 3], int32 [H, W]
"""

import dataclasses
import os

import numpy as np
from PIL import Image

VOC_CLASSES = (
  'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
  'cow', 'table', 'dog', 'horse', 'motorbike', 'person', 'plant', 'sheep', 'sofa', 'train',
  'monitor',
)  # fmt: skip
CONTEXT_CLASSES = (
  'background', 'airplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird', 'boat',
  'book', 'bottle', 'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair', 'cloth',
  'computer', 'cow', 'cup', 'curtain', 'dog', 'door', 'fence', 'floor', 'flower', 'food',
  'grass', 'ground', 'horse', 'keyboard', 'light', 'motorbike', 'mountain', 'mouse', 'person',
  'plate', 'platform', 'plant', 'road', 'rock', 'sheep', 'shelves', 'sidewalk', 'sign', 'sky',
  'snow', 'sofa', 'table', 'track', 'train', 'tree', 'truck', 'monitor', 'wall', 'water',
  'window', 'wood',
)  # fmt: skip
COCO_OBJECT_CLASSES = (
  'background', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck',
  'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
  'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
  'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
  'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
  'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
  'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
  'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
  'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
  'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush',
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a dataset's files are, relative to its root (`root` under a parent data_dir)."""

  root: str
  images: str
  masks: str
  split: str | None  # a file of ids, one per line; None: every image in `images`
  image_suffix: str
  mask_suffix: str
  class_names: tuple[str, ...]
  background_threshold: float


LAYOUTS = {
  'voc': Layout(
    'VOCdevkit/VOC2012', 'JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation/val.txt',
    '.jpg', '.png', VOC_CLASSES, 0.95,
  ),
  'context': Layout(
    'VOCdevkit/VOC2010', 'JPEGImages', 'SegmentationClassContext',
    'ImageSets/SegmentationContext/val.txt', '.jpg', '.png', CONTEXT_CLASSES, 0.35,
  ),
  'coco_object': Layout(
    'coco', 'images/val2017', 'annotations/val2017', None, '.jpg', '_instanceTrainIds.png',
    COCO_OBJECT_CLASSES, 0.95,
  ),
}  # fmt: skip


class LayoutError(FileNotFoundError):
  """A dataset directory that does not have the expected layout."""


@dataclasses.dataclass(frozen=True)
class SegmentationDataset:
  """Image and mask paths of one split, with the classes and threshold to evaluate it with."""

  name: str
  root: str
  ids: tuple[str, ...]
  images: tuple[str, ...]
  masks: tuple[str, ...]
  class_names: tuple[str, ...]
  background_threshold: float

  def __len__(self) -> int:
    return len(self.ids)

  def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3], mask int32 [H, W]) of example `index`."""
    with Image.open(self.images[index]) as image:
      pixels = np.asarray(image.convert('RGB'))
    with Image.open(self.masks[index]) as mask:
      labels = np.asarray(mask, np.int32)  # palette PNGs read as their indices
    if labels.shape != pixels.shape[:2]:
      raise ValueError(
        f'{self.masks[index]} is {labels.shape[1]}x{labels.shape[0]} but its image is '
        f'{pixels.shape[1]}x{pixels.shape[0]}'
      )
    return pixels, labels


def _find_root(data_dir: str, layout: Layout) -> str:
  """The dataset's own directory: data_dir itself or data_dir/<a tail of layout.root>."""
  parts = layout.root.split('/')
  for start in range(len(parts) + 1):
    candidate = os.path.join(data_dir, *parts[start:])
    if os.path.isdir(os.path.join(candidate, layout.images)):
      return candidate
  return os.path.join(data_dir, layout.root) if os.path.isdir(data_dir) else data_dir


def _expected(layout: Layout) -> str:
  split = f', {layout.split}' if layout.split else ''
  return (
    f'{layout.root}/{{{layout.images}/*{layout.image_suffix}, '
    f'{layout.masks}/*{layout.mask_suffix}{split}}}'
  )


def open_dataset(name: str, data_dir: str) -> SegmentationDataset:
  """The evaluation split of `name` ('voc', 'context', 'coco_object') under `data_dir`; a
  LayoutError names whatever is missing."""
  if name not in LAYOUTS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {sorted(LAYOUTS)}')
  layout = LAYOUTS[name]
  root = _find_root(data_dir, layout)
  needed = [layout.images, layout.masks] + ([layout.split] if layout.split else [])
  absent = [p for p in needed if not os.path.exists(os.path.join(root, p))]
  if absent:
    raise LayoutError(
      f'{name}: {", ".join(os.path.join(root, p) for p in absent)} not found; expected '
      f'{_expected(layout)} in or under {data_dir}'
    )
  if layout.split:
    with open(os.path.join(root, layout.split)) as f:
      ids = tuple(line.strip() for line in f if line.strip())
  else:
    suffix = layout.image_suffix
    ids = tuple(
      sorted(
        n[: -len(suffix)]
        for n in os.listdir(os.path.join(root, layout.images))
        if n.endswith(suffix)
      )
    )
  if not ids:
    raise LayoutError(f'{name}: no examples listed in {root} (expected {_expected(layout)})')
  images = tuple(os.path.join(root, layout.images, i + layout.image_suffix) for i in ids)
  masks = tuple(os.path.join(root, layout.masks, i + layout.mask_suffix) for i in ids)
  missing = [p for pair in zip(images, masks) for p in pair if not os.path.isfile(p)]
  if missing:
    raise LayoutError(
      f'{name}: {len(missing)} of the {2 * len(ids)} image and mask files of the split are '
      f'missing (first: {missing[0]}); the dataset under {root} is incomplete'
    )
  return SegmentationDataset(
    name, root, ids, images, masks, layout.class_names, layout.background_threshold
  )
