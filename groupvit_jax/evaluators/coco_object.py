"""COCO-Object label masks for the zero-shot evaluation, from COCO-Stuff's maps or COCO's json.

The evaluation (datasets.LAYOUTS['coco_object']) reads

  coco/images/<split>/<id>.jpg
  coco/annotations/<split>/<id>_instanceTrainIds.png   uint8: 0 background, 1..80 things

where a thing's trainId is 1 + the rank of its COCO category id among the 80 used ids (1..90
without 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83): its index in COCO_OBJECT_CLASSES.

from_stuffthingmaps is the released GroupViT evaluation's path: it relabels COCO-Stuff 164k's
pixel maps (annotations/<split>/<id>.png, value = category id - 1: things 0..90, stuff 91..181,
255 unlabeled), and stuff and unlabeled pixels become background. from_instances rebuilds the
same thing pixels from COCO's annotations/instances_<split>.json, painting each image's
annotations (crowd ones included) in file order as COCO-Stuff's cocoSegmentationToPng did; its
masks may still differ from the maps' at a few pixels (boundaries, overlapping objects).

  python -m groupvit_jax.evaluators.coco_object --coco_dir /data/coco \\
      [--source instances|stuffthingmaps] [--split val2017] [--annotations JSON] [--workers N]

Paths may be URLs (gs://...).
"""

import argparse
import contextlib
import io
import json
import os
import sys
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from groupvit_jax import filesystem
from groupvit_jax.evaluators import datasets
from groupvit_jax.evaluators.datasets import COCO_OBJECT_CLASSES
from groupvit_jax.progress import Progress

_UNUSED_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
THING_CATEGORY_IDS = tuple(i for i in range(1, 92) if i not in _UNUSED_THING_IDS)
TRAIN_IDS = {category_id: rank + 1 for rank, category_id in enumerate(THING_CATEGORY_IDS)}
# COCO-Stuff map value (category id - 1; 255 unlabeled) -> trainId; stuff and unused ids -> 0.
STUFFTHINGMAP_TO_TRAIN_ID = np.zeros(256, np.uint8)
STUFFTHINGMAP_TO_TRAIN_ID[np.array(THING_CATEGORY_IDS) - 1] = np.arange(1, 81)

MASK_SUFFIX = '_instanceTrainIds.png'


class ConversionError(ValueError):
  """An input file that cannot be read or is not what the conversion expects."""


def _convert_all(convert: Callable, jobs: Sequence, workers: int | None, progress: bool) -> int:
  """Runs convert(job) for every job on `workers` threads; returns len(jobs)."""
  meter = Progress(len(jobs), 'converted', 'masks', log=None if progress else lambda _: None)
  workers = os.cpu_count() if workers is None else workers
  for _ in datasets.prefetch(lambda i: convert(jobs[i]), range(len(jobs)), workers):
    meter.update()
  meter.finish()
  return len(jobs)


def _write_mask(labels: np.ndarray, path: str) -> None:
  with filesystem.open(path, 'wb') as f:
    Image.fromarray(labels).save(f, format='PNG')  # uint8 [H, W]: mode 'L'


def _relabel_map(paths: tuple[str, str]) -> None:
  source, target = paths
  try:
    with filesystem.open(source, 'rb') as f, Image.open(f) as image:
      mode = image.mode
      values = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as error:
    raise ConversionError(f'{source}: cannot read it as a PNG ({error})') from error
  if mode not in ('L', 'P'):
    raise ConversionError(f'{source}: mode {mode}; expected an 8-bit COCO-Stuff label map')
  _write_mask(np.take(STUFFTHINGMAP_TO_TRAIN_ID, values), target)


def from_stuffthingmaps(
  coco_dir: str, split: str = 'val2017', workers: int | None = None, progress: bool = True
) -> int:
  """Writes <id>_instanceTrainIds.png beside each COCO-Stuff map coco_dir/annotations/<split>/
  <id>.png (the released conversion); returns the number of masks written."""
  maps_dir = os.path.join(coco_dir, 'annotations', split)
  expected = (
    f'expected COCO-Stuff 164k pixel maps (stuffthingmaps_trainval2017.zip, its {split}/*.png) '
    f'in {maps_dir}'
  )
  if not filesystem.isdir(maps_dir):
    raise FileNotFoundError(f'{maps_dir} not found; {expected}')
  names = [n for n in filesystem.listdir(maps_dir) if n.endswith('.png') and 'TrainIds' not in n]
  if not names:
    raise FileNotFoundError(f'no <id>.png maps in {maps_dir}; {expected}')
  jobs = [
    (os.path.join(maps_dir, n), os.path.join(maps_dir, n[: -len('.png')] + MASK_SUFFIX))
    for n in names
  ]
  return _convert_all(_relabel_map, jobs, workers, progress)


def _read_instances(path: str) -> dict:
  try:
    dataset = json.loads(filesystem.read_text(path))
  except ValueError as error:
    raise ConversionError(f'{path}: not readable as JSON ({error})') from error
  if not isinstance(dataset, dict) or not {'images', 'annotations'} <= dataset.keys():
    raise ConversionError(f'{path}: no "images" and "annotations"; expected a COCO instances json')
  for category in dataset.get('categories', []):
    train_id = TRAIN_IDS.get(category['id'])
    if train_id is not None and category['name'] != COCO_OBJECT_CLASSES[train_id]:
      raise ConversionError(
        f"{path}: category {category['id']} is {category['name']!r}, not COCO's "
        f'{COCO_OBJECT_CLASSES[train_id]!r}; expected a COCO instances json'
      )
  unknown = {a['category_id'] for a in dataset['annotations']} - TRAIN_IDS.keys()
  if unknown:
    raise ConversionError(
      f'{path}: annotations of category ids {sorted(unknown)}, which are not COCO things'
    )
  return dataset


def from_instances(
  coco_dir: str,
  split: str = 'val2017',
  annotations: str | None = None,
  workers: int | None = None,
  progress: bool = True,
) -> int:
  """Writes coco_dir/annotations/<split>/<stem>_instanceTrainIds.png for every image of COCO's
  instances json (default coco_dir/annotations/instances_<split>.json), painting its
  annotations' trainIds in file order; returns the number of masks written."""
  try:
    from pycocotools.coco import COCO
  except ImportError as error:
    raise ImportError(
      'from_instances needs pycocotools to rasterize COCO annotations: pip install pycocotools'
    ) from error
  path = annotations or os.path.join(coco_dir, 'annotations', f'instances_{split}.json')
  if not filesystem.isfile(path):
    raise FileNotFoundError(
      f"{path} not found; expected COCO's instances_{split}.json "
      '(annotations_trainval2017.zip) there, or pass its path'
    )
  coco = COCO()
  coco.dataset = _read_instances(path)
  with contextlib.redirect_stdout(io.StringIO()):  # createIndex's chatter
    coco.createIndex()
  out_dir = os.path.join(coco_dir, 'annotations', split)
  filesystem.makedirs(out_dir)

  def paint(image: dict) -> None:
    labels = np.zeros((image['height'], image['width']), np.uint8)
    for annotation in coco.imgToAnns[image['id']]:  # file order
      labels[coco.annToMask(annotation) == 1] = TRAIN_IDS[annotation['category_id']]
    stem = os.path.splitext(image['file_name'])[0]
    _write_mask(labels, os.path.join(out_dir, stem + MASK_SUFFIX))

  return _convert_all(paint, coco.dataset['images'], workers, progress)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.evaluators.coco_object', description=__doc__.split('\n')[0]
  )
  parser.add_argument('--coco_dir', required=True, help='holds images/ and annotations/')
  parser.add_argument(
    '--source',
    choices=('instances', 'stuffthingmaps'),
    default='instances',
    help='instances: rasterize instances_<split>.json (pycocotools); stuffthingmaps: relabel '
    "COCO-Stuff's annotations/<split>/*.png, as the released evaluation did",
  )
  parser.add_argument('--split', default='val2017', help='masks go to annotations/<split>/')
  parser.add_argument('--annotations', help='instances json (default: in coco_dir/annotations)')
  parser.add_argument('--workers', type=int, help='threads (default: one per CPU core)')
  args = parser.parse_args(argv)
  try:
    if args.source == 'instances':
      count = from_instances(args.coco_dir, args.split, args.annotations, args.workers)
    else:
      if args.annotations:
        parser.error('--annotations is for --source instances')
      count = from_stuffthingmaps(args.coco_dir, args.split, args.workers)
  except (FileNotFoundError, ImportError, ConversionError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  out_dir = os.path.join(args.coco_dir, 'annotations', args.split)
  print(f'wrote {count} masks (*{MASK_SUFFIX}) to {out_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
