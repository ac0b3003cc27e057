"""Zero-shot segmentation datasets, read from the layouts mmsegmentation prepares.

  voc          VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette indices),
               ImageSets/Segmentation/val.txt}
  context      VOCdevkit/VOC2010/{JPEGImages/*.jpg, SegmentationClassContext/*.png (0..59),
               ImageSets/SegmentationContext/val.txt}
  coco_object  coco/{images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png (0..80)}
               (evaluators/coco_object.py writes these masks from COCO's annotations)
  imagenet     val/<wordnet id>/*.JPEG, one folder per class (n01440764 ...): open_imagenet
  folders      <split>/<class name>/*, any class-folder dataset: open_class_folders

Those are the evaluation splits; `split='train'` reads the training split instead (train.txt,
train2017, train/), for fine-tuning and linear probes.

`data_dir` may be the dataset's own directory (e.g. .../VOCdevkit/VOC2012) or any directory
above it on that path (e.g. the one holding VOCdevkit). Class names and background thresholds
are the released evaluation's (docs/released_model.md, "Zero-shot segmentation protocol");
label 255 is ignored. `data_dir` may be a URL (gs://...).

  dataset = open_dataset('voc', '/data')
  image, mask = dataset.load(0)  # uint8 [H, W, 3], int32 [H, W]
"""

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import os
import re
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from groupvit_jax import filesystem
from groupvit_jax.evaluators.imagenet_classes import IMAGENET_CLASSES
from input_pipeline import image_transforms

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

  def of_split(self, split: str) -> 'Layout':
    """This layout with '{split}' in its paths filled in ('val', 'train')."""

    def fill(path):
      return path and path.format(split=split)

    return dataclasses.replace(
      self, images=fill(self.images), masks=fill(self.masks), split=fill(self.split)
    )

  image_suffix: str
  mask_suffix: str
  class_names: tuple[str, ...]
  background_threshold: float


# Paths with '{split}' to fill in ('val', 'train'): layout() gives a split's.
_LAYOUT_TEMPLATES = {
  'voc': Layout(
    'VOCdevkit/VOC2012', 'JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation/{split}.txt',
    '.jpg', '.png', VOC_CLASSES, 0.95,
  ),
  'context': Layout(
    'VOCdevkit/VOC2010', 'JPEGImages', 'SegmentationClassContext',
    'ImageSets/SegmentationContext/{split}.txt', '.jpg', '.png', CONTEXT_CLASSES, 0.35,
  ),
  'coco_object': Layout(
    'coco', 'images/{split}2017', 'annotations/{split}2017', None, '.jpg', '_instanceTrainIds.png',
    COCO_OBJECT_CLASSES, 0.95,
  ),
}  # fmt: skip


def layout(name: str, split: str = 'val') -> Layout:
  """Where the files of a segmentation dataset's split are."""
  return _LAYOUT_TEMPLATES[name].of_split(split)


# The evaluation splits' layouts.
LAYOUTS = {name: layout(name) for name in _LAYOUT_TEMPLATES}


class LayoutError(FileNotFoundError):
  """A dataset directory that does not have the expected layout."""


def read_image(path: str) -> np.ndarray:
  """The image file at `path` as uint8 RGB [H, W, 3] (grey, palette, CMYK, alpha and 16-bit
  images converted); a ValueError naming the file if it cannot be decoded."""
  data = filesystem.read_bytes(path)
  try:
    return np.asarray(image_transforms.decode(data))
  except image_transforms.DamagedImage as error:
    raise ValueError(f'{path}: not a readable image ({error})') from None


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
    pixels = read_image(self.images[index])
    with filesystem.open(self.masks[index], 'rb') as f, Image.open(f) as mask:
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
    if filesystem.isdir(os.path.join(candidate, layout.images)):
      return candidate
  return os.path.join(data_dir, layout.root) if filesystem.isdir(data_dir) else data_dir


def _expected(layout: Layout) -> str:
  split = f', {layout.split}' if layout.split else ''
  return (
    f'{layout.root}/{{{layout.images}/*{layout.image_suffix}, '
    f'{layout.masks}/*{layout.mask_suffix}{split}}}'
  )


DATASETS = ('voc', 'context', 'coco_object', 'imagenet')


def open_dataset(name: str, data_dir: str, split: str = 'val'):
  """A split ('val', the evaluation split, or 'train') of `name` (one of DATASETS) under
  `data_dir`: a SegmentationDataset, or for 'imagenet' a ClassificationDataset. A LayoutError
  names whatever is missing."""
  if name == 'imagenet':
    return open_imagenet(data_dir, split)
  if name not in LAYOUTS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(DATASETS)}')
  return _open_segmentation(name, data_dir, layout(name, split))


def _open_segmentation(name: str, data_dir: str, layout: Layout) -> 'SegmentationDataset':
  root = _find_root(data_dir, layout)
  needed = [layout.images, layout.masks] + ([layout.split] if layout.split else [])
  absent = [p for p in needed if not filesystem.exists(os.path.join(root, p))]
  if absent:
    raise LayoutError(
      f'{name}: {", ".join(os.path.join(root, p) for p in absent)} not found; expected '
      f'{_expected(layout)} in or under {data_dir}'
    )
  if layout.split:
    lines = filesystem.read_text(os.path.join(root, layout.split)).splitlines()
    ids = tuple(line.strip() for line in lines if line.strip())
  else:
    suffix = layout.image_suffix
    ids = tuple(
      sorted(
        n[: -len(suffix)]
        for n in filesystem.listdir(os.path.join(root, layout.images))
        if n.endswith(suffix)
      )
    )
  if not ids:
    raise LayoutError(f'{name}: no examples listed in {root} (expected {_expected(layout)})')
  images = tuple(os.path.join(root, layout.images, i + layout.image_suffix) for i in ids)
  masks = tuple(os.path.join(root, layout.masks, i + layout.mask_suffix) for i in ids)
  paths = [p for pair in zip(images, masks) for p in pair]
  missing = [p for p, found in zip(paths, filesystem.are_files(paths)) if not found]
  if missing:
    raise LayoutError(
      f'{name}: {len(missing)} of the {2 * len(ids)} image and mask files of the split are '
      f'missing (first: {missing[0]}); the dataset under {root} is incomplete'
    )
  return SegmentationDataset(
    name, root, ids, images, masks, layout.class_names, layout.background_threshold
  )


@dataclasses.dataclass(frozen=True)
class ClassificationDataset:
  """Image paths of a class-folder split with their labels and the classes' prompt names."""

  name: str
  root: str
  images: tuple[str, ...]
  labels: tuple[int, ...]
  class_names: tuple[str, ...]

  @functools.cached_property
  def ids(self) -> tuple[str, ...]:
    """'<class folder>/<file name without extension>' per image."""
    return tuple(os.path.splitext(os.path.relpath(p, self.root))[0] for p in self.images)

  def __len__(self) -> int:
    return len(self.images)

  def load(self, index: int) -> tuple[np.ndarray, int]:
    """(image uint8 [H, W, 3], label) of example `index`."""
    return read_image(self.images[index]), self.labels[index]


IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png', '.webp', '.bmp')
_WORDNET_ID = re.compile(r'n\d{8}')
# Threads asking about ImageNet's 1000 class folders at once (one request each on gs://).
_LISTING_WORKERS = 16


def _in_parallel(function: Callable[[str], Any], items: list[str]) -> list:
  return list(prefetch(lambda i: function(items[i]), range(len(items)), _LISTING_WORKERS))


def _class_folders(directory: str, pattern: re.Pattern | None = None) -> list[str]:
  """The sub-folders of `directory` (those whose name matches `pattern`), sorted."""
  if not filesystem.isdir(directory):
    return []
  names = [n for n in filesystem.listdir(directory) if not pattern or pattern.fullmatch(n)]
  folders = _in_parallel(lambda n: filesystem.isdir(os.path.join(directory, n)), names)
  return sorted(n for n, is_folder in zip(names, folders) if is_folder)


def _class_folder_split(
  name: str, root: str, folders: list[str], class_names: tuple[str, ...]
) -> ClassificationDataset:
  """The images of root/<folder>/, labelled by the folder's position in `folders`."""
  listings = _in_parallel(lambda folder: filesystem.listdir(os.path.join(root, folder)), folders)
  images, labels = [], []
  for label, (folder, listing) in enumerate(zip(folders, listings)):
    names = [n for n in listing if n.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
      raise LayoutError(f'{name}: class folder {os.path.join(root, folder)} has no images')
    images += [os.path.join(root, folder, n) for n in names]
    labels += [label] * len(names)
  return ClassificationDataset(name, root, tuple(images), tuple(labels), class_names)


def open_class_folders(data_dir: str, split: str = 'val') -> ClassificationDataset:
  """Any class-folder dataset, data_dir/<split>/<class name>/<images>: classes in sorted
  folder order, named by their folders. A LayoutError names what is missing."""
  root = os.path.join(data_dir, split)
  folders = _class_folders(root)
  if not folders:
    raise LayoutError(
      f'folders: no class folders in {root}; expected {split}/<class name>/<images> under '
      f'{data_dir}'
    )
  return _class_folder_split('folders', root, folders, tuple(folders))


def open_imagenet(data_dir: str, split: str = 'val') -> ClassificationDataset:
  """An ImageNet split ('val' or 'train') as 1000 class folders named by WordNet id, in
  `data_dir`, `data_dir/<split>` or `data_dir/imagenet/<split>`; classes in sorted folder
  order, which is the order of IMAGENET_CLASSES. A LayoutError names what is missing."""
  candidates = [data_dir, os.path.join(data_dir, split), os.path.join(data_dir, 'imagenet', split)]
  for root in candidates:
    folders = _class_folders(root, _WORDNET_ID)
    if folders:
      break
  else:
    raise LayoutError(
      f'imagenet: no class folders (n01440764, ...) in {", ".join(candidates)}; expected the '
      f'{split} images sorted into one folder per class'
    )
  if len(folders) != len(IMAGENET_CLASSES):
    raise LayoutError(
      f'imagenet: {root} has {len(folders)} class folders, expected {len(IMAGENET_CLASSES)} '
      f'(first: {folders[0]}, last: {folders[-1]}); the split is incomplete'
    )
  return _class_folder_split('imagenet', root, folders, IMAGENET_CLASSES)


def subset(num_examples: int, max_examples: int | None) -> list[int]:
  """All indices, or `max_examples` of them evenly spread over the split (every class of a
  class-sorted split is then represented)."""
  if not max_examples or max_examples >= num_examples:
    return list(range(num_examples))
  return sorted({int(i) for i in np.linspace(0, num_examples - 1, max_examples).round()})


def prefetch(load: Callable[[int], Any], indices: Iterable[int], workers: int = 8) -> Iterator:
  """load(i) for each index, in order, computed by `workers` threads up to 4 * workers ahead
  (decoding and resizing in Pillow release the GIL)."""
  indices = iter(indices)
  with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
    pending = collections.deque(
      pool.submit(load, i) for i in itertools.islice(indices, 4 * workers)
    )
    while pending:
      result = pending.popleft().result()
      for i in itertools.islice(indices, 1):
        pending.append(pool.submit(load, i))
      yield result
