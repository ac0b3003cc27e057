"""Zero-shot evaluation of a checkpoint with the paper's protocol, one command per dataset:

  python -m groupvit_jax.evaluate --checkpoint DIR --dataset voc|context|coco_object|imagenet \
      --data_dir PATH [--json OUT] [--save_predictions DIR] [--max_examples N]

`--checkpoint` is a groupvit_jax checkpoint, a released NVlabs `.pth` or a Hugging Face
directory. Dataset layouts: see groupvit_jax/evaluators/datasets.py. Segmentation prints mIoU,
mAcc, aAcc and a per-class table; ImageNet prints top-1 and top-5 (all in %). The JSON holds the
same numbers as fractions. Every path may be a URL (gs://...).
"""

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
from PIL import Image

import groupvit_jax
from groupvit_jax import filesystem, visualize
from groupvit_jax.evaluators import datasets
from groupvit_jax.progress import Progress

_PALETTE = visualize.label_colours(256).reshape(-1).tolist()


def save_label_png(path: str, labels: np.ndarray) -> None:
  """int label map [H, W] (0..255) -> palette PNG whose pixel values are the labels."""
  image = Image.fromarray(np.asarray(labels, np.uint8), 'P')
  image.putpalette(_PALETTE)
  filesystem.makedirs(os.path.dirname(path))
  with filesystem.open(path, 'wb') as f:
    image.save(f, format='PNG')


def _percent(value: float) -> str:
  return '  nan' if math.isnan(value) else f'{100 * value:5.2f}'


def summary(dataset: str, result: dict) -> str:
  """The result as text: mmseg's per-class IoU / Acc table, then the means (in %)."""
  if 'top1' in result:
    return f'{dataset}: top-1 {_percent(result["top1"])} | top-5 {_percent(result["top5"])}'
  width = max(len(name) for name in result['per_class'])
  lines = [f'{"class":<{width}}   IoU    Acc']
  for name, iou in result['per_class'].items():
    lines.append(f'{name:<{width}} {_percent(iou)}  {_percent(result["per_class_acc"][name])}')
  lines.append(
    f'{dataset}: mIoU {_percent(result["miou"])} | mAcc {_percent(result["macc"])} | '
    f'aAcc {_percent(result["aacc"])}'
  )
  return '\n'.join(lines)


def _json_ready(value):
  """NaN -> None (JSON has no NaN), arrays dropped, containers recursed."""
  if isinstance(value, dict):
    return {k: _json_ready(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
  if isinstance(value, float) and math.isnan(value):
    return None
  return value


def run(
  checkpoint: str,
  dataset: str,
  data_dir: str,
  json_path: str | None = None,
  save_predictions: str | None = None,
  max_examples: int | None = None,
  batch_size: int | None = None,
  workers: int = 8,
  dtype: str | None = None,
) -> dict:
  """Evaluates `checkpoint` on `dataset`; returns (and optionally writes) the results."""
  import jax  # pylint: disable=g-import-not-at-top  # after argument parsing: --help stays quick

  from groupvit_jax import evaluators  # pylint: disable=g-import-not-at-top

  kind = 'zero_shot_classification' if dataset == 'imagenet' else 'zero_shot_segmentation'
  settings = dict(
    type=kind, dataset=dataset, data_dir=data_dir, max_examples=max_examples, workers=workers
  )
  if batch_size:
    settings['batch_size'] = batch_size
  evaluator = evaluators.create({dataset: settings})[dataset]
  model = groupvit_jax.load(checkpoint, dtype)
  on_prediction, rows = None, []
  if save_predictions and dataset == 'imagenet':

    def on_prediction(key, label):
      rows.append((key, label))
  elif save_predictions:

    def on_prediction(key, labels):
      save_label_png(os.path.join(save_predictions, f'{key}.png'), labels)

  progress = Progress(len(evaluator.indices), what=dataset)
  result = evaluator.evaluate(model, on_prediction, progress)
  seconds = progress.finish()
  if rows:
    filesystem.write_text(
      os.path.join(save_predictions, 'predictions.tsv'),
      ''.join(f'{key}\t{label}\t{evaluator.data.class_names[label]}\n' for key, label in rows),
    )
  result.update(
    checkpoint=checkpoint,
    dataset=dataset,
    data_dir=data_dir,
    num_images=len(evaluator.indices),
    seconds=round(seconds, 1),
    images_per_second=len(evaluator.indices) / seconds,
    device=str(jax.devices()[0].device_kind),
  )
  if json_path:
    filesystem.write_text(json_path, json.dumps(_json_ready(result), indent=2))
  return result


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text} is not a positive whole number')
  return value


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.evaluate', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--dataset', required=True, choices=datasets.DATASETS)
  parser.add_argument('--data_dir', required=True, help="the dataset's directory or one above")
  parser.add_argument('--json', help='write the results to this JSON file')
  parser.add_argument(
    '--save_predictions',
    help='write each label map as <image id>.png (palette PNG, pixel = label) into this '
    'directory; for ImageNet, predictions.tsv (image id, class index, class name)',
  )
  parser.add_argument(
    '--max_examples',
    type=_positive_int,
    help='evaluate this many images, evenly spread (quick runs)',
  )
  parser.add_argument(
    '--batch_size',
    type=_positive_int,
    help='images per model call (default 4 segmentation, 64 ImageNet)',
  )
  parser.add_argument(
    '--workers', type=_positive_int, default=8, help='threads reading images ahead of the model'
  )
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), help='default float32')
  args = parser.parse_args(argv)
  try:
    result = run(
      args.checkpoint,
      args.dataset,
      args.data_dir,
      args.json,
      args.save_predictions,
      args.max_examples,
      args.batch_size,
      args.workers,
      args.dtype,
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(summary(args.dataset, result))
  print(
    f'{result["num_images"]} images in {result["seconds"]:.0f}s '
    f'({result["images_per_second"]:.2f} images/s on {result["device"]})'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
