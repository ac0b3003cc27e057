"""Zero-shot evaluation of a checkpoint with the paper's protocol, one command per dataset:

  python -m groupvit_jax.evaluate --checkpoint DIR --dataset voc|context|coco_object|imagenet \
      --data_dir PATH [--json OUT] [--save_predictions DIR] [--max_examples N] \
      [--metrics boundary,oracle,mask_probing] [--grouping kmeans --num_groups 8]

`--checkpoint` is a groupvit_jax checkpoint, a released NVlabs `.pth` or a Hugging Face
directory. Dataset layouts: see groupvit_jax/evaluators/datasets.py. Segmentation prints mIoU,
mAcc, aAcc and a per-class table, and with `--metrics` the boundary mIoU, the oracle mIoU of
the final groups and the mask-probing Jaccard index; ImageNet prints top-1 and top-5 (all in
%). The JSON holds the same numbers as fractions. Every path may be a URL (gs://...).
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
from groupvit_jax import filesystem, nonparametric_grouping, visualize
from groupvit_jax.command_line import json_ready, positive_int
from groupvit_jax.evaluators import datasets, metrics
from groupvit_jax.progress import Progress

_PALETTE = visualize.label_colours(256).reshape(-1).tolist()
# The means in a segmentation summary, those of --metrics where present: (JSON key, label).
_MEANS = (
  ('miou', 'mIoU'),
  ('macc', 'mAcc'),
  ('aacc', 'aAcc'),
  ('boundary_miou', 'boundary mIoU'),
  ('oracle_miou', 'oracle mIoU'),
  ('mask_probing_jaccard', 'mask probing Jaccard'),
)


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
  means = [f'{label} {_percent(result[key])}' for key, label in _MEANS if key in result]
  if 'mask_probing_images' in result:
    means[-1] += f' ({result["mask_probing_images"]} images)'
  lines.append(f'{dataset}: ' + ' | '.join(means))
  return '\n'.join(lines)


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
  extra_metrics: str | Sequence[str] | None = None,
  grouping: str | None = None,
  num_groups: int = 8,
) -> dict:
  """Evaluates `checkpoint` on `dataset`; returns (and optionally writes) the results.

  Segmentation only: `extra_metrics` ('boundary,oracle,mask_probing' or some of them) adds
  their numbers; `grouping` (one of nonparametric_grouping.METHODS, for a ViT; None: a
  GroupViT's own groups) with `num_groups` makes the groups of the zero-shot segmentation.
  """
  extra_metrics = metrics.extra_metric_names(extra_metrics)
  if dataset == 'imagenet' and (extra_metrics or grouping):
    raise ValueError('--metrics and --grouping are for segmentation datasets, not imagenet')

  import jax  # pylint: disable=g-import-not-at-top  # after argument parsing: --help stays quick

  from groupvit_jax import evaluators  # pylint: disable=g-import-not-at-top

  kind = 'zero_shot_classification' if dataset == 'imagenet' else 'zero_shot_segmentation'
  settings = dict(
    type=kind, dataset=dataset, data_dir=data_dir, max_examples=max_examples, workers=workers
  )
  if extra_metrics:
    settings['metrics'] = extra_metrics
  if grouping:
    settings.update(grouping=grouping, num_groups=num_groups)
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
  if grouping:
    result.update(grouping=grouping, num_groups=num_groups)
  if json_path:
    filesystem.write_text(json_path, json.dumps(json_ready(result), indent=2))
  return result


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
    type=positive_int,
    help='evaluate this many images, evenly spread (quick runs)',
  )
  parser.add_argument(
    '--batch_size',
    type=positive_int,
    help='images per model call (default 4 segmentation, 64 ImageNet)',
  )
  parser.add_argument(
    '--workers', type=positive_int, default=8, help='threads reading images ahead of the model'
  )
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), help='default float32')
  parser.add_argument(
    '--metrics',
    help='segmentation: also these, comma-separated: ' + ', '.join(metrics.EXTRA_METRICS),
  )
  parser.add_argument(
    '--grouping',
    choices=nonparametric_grouping.METHODS,
    help="segmentation with a ViT: group its patch embeddings this way (a GroupViT's groups "
    'are its own)',
  )
  parser.add_argument(
    '--num_groups',
    type=positive_int,
    default=8,
    help='groups per image for --grouping kmeans or spectral (default 8)',
  )
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
      args.metrics,
      args.grouping,
      args.num_groups,
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
