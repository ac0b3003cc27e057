"""Fully-supervised transfer (Table 5): fine-tunes an image tower with a 1x1 convolution head
on a segmentation training split, then scores the validation split.

  python -m groupvit_jax.finetune --checkpoint CKPT --dataset voc|context --data_dir PATH \
      --workdir DIR [--steps 4000] [--batch_size 16] [--lr 1e-3] [--json OUT]

`--checkpoint` is a groupvit_jax checkpoint (a GroupViT or a ViT image tower), a released
NVlabs `.pth` or a Hugging Face directory; its whole image tower is trained. The supplement's
recipe is the default: random scale 0.5-2 then 224 crops, AdamW (weight decay 0.05) at lr 1e-3
(poly decay, training/finetune_step.py) for 4k iterations of batch 16, inference on the whole
image at shorter side 448. The metrics
are the zero-shot evaluation's (mIoU, mAcc, aAcc, per class) over the dataset's classes. The
workdir receives the fine-tuned model (`model/`, see training/finetuned_model.py) and
`results.json`. It runs in one process on one device (the default one). Paths may be URLs
(gs://...).
"""

import argparse
import contextlib
import json
import math
import sys
import time
from typing import Sequence

import numpy as np

import groupvit_jax
from groupvit_jax import evaluate, filesystem, progress
from groupvit_jax.command_line import json_ready, positive_int
from groupvit_jax.evaluators import datasets

SEGMENTATION_DATASETS = tuple(name for name in datasets.DATASETS if name != 'imagenet')
MODEL_DIR = 'model'
RESULTS_FILE = 'results.json'
LOG_SECONDS = 2.0  # the least time between two progress lines


def _train(step_fn, state, batches, steps: int, batch_size: int):
  """Runs `steps` train steps, printing progress lines; returns (state, the mean loss of the
  last logged stretch). The loss is read from the device only when a line is printed."""
  start = last = time.time()
  since, losses = 0, []
  for step in range(1, steps + 1):
    batch = next(batches)
    state, loss = step_fn(state, batch['image'], batch['mask'])
    losses.append(loss)
    since += 1
    if time.time() - last >= LOG_SECONDS or step == steps:
      mean_loss = float(np.mean([np.asarray(value) for value in losses]))
      if not math.isfinite(mean_loss):
        raise ValueError(f'the loss became {mean_loss} by step {step}; lower --lr')
      now = time.time()
      metrics = {'loss': mean_loss, 'samples_per_second': since * batch_size / (now - last)}
      line = progress.progress_line(step, steps, (now - start) / step, metrics)
      print(f'finetune: {line}', file=sys.stderr, flush=True)
      last, since, losses = now, 0, []
  return state, mean_loss


def run(
  checkpoint: str,
  dataset: str,
  data_dir: str,
  workdir: str,
  steps: int = 4000,
  batch_size: int = 16,
  lr: float = 1e-3,
  weight_decay: float = 0.05,
  crop_size: int = 224,
  short_side: int = 448,
  seed: int = 0,
  json_path: str | None = None,
  max_eval_examples: int | None = None,
  workers: int = 8,
) -> dict:
  """Fine-tunes `checkpoint`'s image tower on `dataset`'s train split, scores the val split;
  returns (and writes to the workdir and `json_path`) the results."""
  import jax  # pylint: disable=g-import-not-at-top  # after argument parsing: --help stays quick

  from groupvit_jax.evaluators import zero_shot_segmentation  # pylint: disable=g-import-not-at-top
  from groupvit_jax.models.segmentation_head import (  # pylint: disable=g-import-not-at-top
    SegmentationModel,
    image_tower,
  )
  from groupvit_jax.training import (  # pylint: disable=g-import-not-at-top
    finetune_data,
    finetune_step,
    finetuned_model,
  )

  if dataset not in SEGMENTATION_DATASETS:
    choices = ', '.join(SEGMENTATION_DATASETS)
    raise ValueError(f'{dataset} is not a segmentation dataset (one of {choices})')
  train_split = datasets.open_dataset(dataset, data_dir, 'train')
  val_split = datasets.open_dataset(dataset, data_dir, 'val')
  pretrained = groupvit_jax.load(checkpoint)
  tower, tower_variables = image_tower(pretrained.model, jax.device_get(pretrained.variables))
  model = SegmentationModel(tower, len(train_split.class_names))
  optimizer = finetune_step.make_optimizer(lr, weight_decay, steps)
  state = finetune_step.create_state(model, tower_variables['params'], optimizer, crop_size, seed)
  step_fn = finetune_step.make_train_step(model, optimizer)
  start = time.time()
  with contextlib.closing(
    finetune_data.training_batches(train_split, batch_size, crop_size, seed, workers)
  ) as batches:
    state, final_loss = _train(step_fn, state, batches, steps, batch_size)
  train_seconds = time.time() - start
  variables = {'params': state.params}
  settings = dict(
    dataset=dataset,
    steps=steps,
    batch_size=batch_size,
    lr=lr,
    weight_decay=weight_decay,
    crop_size=crop_size,
    short_side=short_side,
    seed=seed,
  )
  model_dir = filesystem.join(workdir, MODEL_DIR)
  finetuned_model.save(
    model_dir, pretrained.config, train_split.class_names, variables, {'finetune': settings}
  )

  indices = datasets.subset(len(val_split), max_eval_examples)

  def load(i):
    image, mask = val_split.load(i)
    return image, mask, val_split.ids[i]

  scoring = progress.Progress(len(indices), what=f'{dataset} val')
  result = zero_shot_segmentation.evaluate(
    finetuned_model.FinetunedSegmenter(model, variables, short_side),
    datasets.prefetch(load, indices, workers),
    val_split.class_names,
    batch_size=4,
    progress=scoring,
  )
  eval_seconds = scoring.finish()
  result.update(
    checkpoint=checkpoint,
    data_dir=data_dir,
    image_tower=pretrained.config.get('image_tower', 'groupvit'),
    **settings,
    final_loss=final_loss,
    num_train_images=len(train_split),
    num_val_images=len(indices),
    train_seconds=round(train_seconds, 1),
    eval_seconds=round(eval_seconds, 1),
    model_dir=model_dir,
    device=str(jax.devices()[0].device_kind),
  )
  ready = json_ready(result)  # NaN -> null
  text = json.dumps(ready, indent=2)
  for path in [filesystem.join(workdir, RESULTS_FILE)] + ([json_path] if json_path else []):
    filesystem.write_text(path, text)
  return result


def _non_negative_float(text: str) -> float:
  value = float(text)
  if not value >= 0:
    raise argparse.ArgumentTypeError(f'{text} is not a number >= 0')
  return value


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.finetune', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--dataset', required=True, choices=SEGMENTATION_DATASETS)
  parser.add_argument('--data_dir', required=True, help="the dataset's directory or one above")
  parser.add_argument(
    '--workdir', required=True, help='where the fine-tuned model and results.json go'
  )
  parser.add_argument('--steps', type=positive_int, default=4000, help='training iterations')
  parser.add_argument('--batch_size', type=positive_int, default=16, help='crops per step')
  parser.add_argument('--lr', type=_non_negative_float, default=1e-3, help='peak learning rate')
  parser.add_argument('--weight_decay', type=_non_negative_float, default=0.05)
  parser.add_argument('--crop_size', type=positive_int, default=224, help='training crop side')
  parser.add_argument(
    '--short_side', type=positive_int, default=448, help='inference: shorter side in pixels'
  )
  parser.add_argument('--seed', type=int, default=0, help='head init, data order, crops, noise')
  parser.add_argument('--json', help='also write the results to this JSON file')
  parser.add_argument(
    '--max_eval_examples',
    type=positive_int,
    help='score this many validation images, evenly spread (quick runs)',
  )
  parser.add_argument(
    '--workers', type=positive_int, default=8, help='threads reading images ahead of the model'
  )
  args = parser.parse_args(argv)
  try:
    result = run(
      args.checkpoint,
      args.dataset,
      args.data_dir,
      args.workdir,
      steps=args.steps,
      batch_size=args.batch_size,
      lr=args.lr,
      weight_decay=args.weight_decay,
      crop_size=args.crop_size,
      short_side=args.short_side,
      seed=args.seed,
      json_path=args.json,
      max_eval_examples=args.max_eval_examples,
      workers=args.workers,
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(evaluate.summary(args.dataset, result))
  print(
    f'{result["steps"]} steps in {result["train_seconds"]:.0f}s, '
    f'{result["num_val_images"]} val images in {result["eval_seconds"]:.0f}s on '
    f'{result["device"]}; model in {result["model_dir"]}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
