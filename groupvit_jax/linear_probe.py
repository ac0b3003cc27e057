"""Linear probe of frozen image features (supplement Table 1) with CLIP's protocol:

  python -m groupvit_jax.linear_probe --checkpoint CKPT --data_dir PATH \
      [--dataset imagenet|folders] [--features pooled|embedding] [--json OUT]

Features: the image tower's pooled features before the projection head (CLIP's probes read
these; `--features embedding`: the projected, L2-normalised embedding), of images resized to a
shorter side of image_size * 256 / 224 and centre-cropped to image_size (the model's training
size unless `--image_size`), as the zero-shot ImageNet evaluation does. Classifier:
scikit-learn's multinomial logistic regression (L-BFGS, 1000 iterations, as CLIP). Its inverse
regularisation C is chosen on a stratified, seeded held-out part of the train split: C over
1e-6, 1e-4, ..., 1e6, then three halvings of the log-step around the best (10^+-1, +-0.5,
+-0.25, staying within 1e-6..1e6); the best held-out top-1 wins, ties going to the smaller C.
The classifier is then refit on the whole train split at that C and scored on the val split
(top-1, top-5).

`--dataset imagenet` reads ImageNet's train/ and val/ class folders (datasets.open_imagenet);
`--dataset folders` any data_dir/train/<class>/*, data_dir/val/<class>/* with the same class
folders, named by their folder. Paths may be URLs (gs://...).
"""

import argparse
import json
import sys
import time
import warnings
from typing import Sequence

import numpy as np

import groupvit_jax
from groupvit_jax import filesystem
from groupvit_jax.command_line import positive_int
from groupvit_jax.evaluators import datasets
from groupvit_jax.progress import Progress

DATASETS = ('imagenet', 'folders')
FEATURES = ('pooled', 'embedding')
COARSE_LOG10_C = tuple(range(-6, 7, 2))  # 1e-6, 1e-4, ..., 1e6
REFINE_LOG10_STEPS = (1.0, 0.5, 0.25)
MAX_ITER = 1000


def open_split(dataset: str, data_dir: str, split: str) -> datasets.ClassificationDataset:
  if dataset == 'imagenet':
    return datasets.open_imagenet(data_dir, split)
  if dataset == 'folders':
    return datasets.open_class_folders(data_dir, split)
  raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(DATASETS)}')


def check_same_classes(train: datasets.ClassificationDataset, val: datasets.ClassificationDataset):
  """A ValueError unless both splits have the same classes in the same order."""
  if train.class_names == val.class_names:
    return
  only_train = sorted(set(train.class_names) - set(val.class_names))
  only_val = sorted(set(val.class_names) - set(train.class_names))
  raise ValueError(
    f'the train and val class folders differ: only in {train.root}: '
    f'{", ".join(only_train) or "-"}; only in {val.root}: {", ".join(only_val) or "-"}'
  )


def per_class_subset(labels: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
  """Sorted indices keeping at most `max_per_class` examples of each class, drawn at random
  (seeded); all of them without a limit."""
  if not max_per_class:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  kept = [rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in np.unique(labels)]
  return np.sort(np.concatenate(kept))


def stratified_holdout(
  labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(fit, held-out) sorted positions into `labels`: of each class's n examples, a seeded
  random round(fraction * n) are held out, at least one and at most n - 1 (a class with one
  example keeps it for fitting)."""
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    count = min(max(round(fraction * len(members)), 1), len(members) - 1)
    held.append(members[:count])
  held = np.sort(np.concatenate(held))
  return np.setdiff1d(np.arange(len(labels)), held), held


def fit(features: np.ndarray, labels: np.ndarray, c: float):
  """scikit-learn's multinomial logistic regression (L-BFGS) at inverse regularisation c."""
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top

  classifier = LogisticRegression(C=c, max_iter=MAX_ITER)
  with warnings.catch_warnings():
    # Weakly regularised fits of separable features may stop at the iteration cap; the sweep
    # judges them by their held-out accuracy all the same.
    warnings.simplefilter('ignore', ConvergenceWarning)
    return classifier.fit(features, labels)


def sweep_c(
  fit_x: np.ndarray, fit_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, log=print
) -> tuple[float, dict[float, float]]:
  """(best C, held-out top-1 by C tried): C = 10^k for k in COARSE_LOG10_C, then k_best +- s
  for s in REFINE_LOG10_STEPS (within the coarse range), k_best the best so far: the highest
  top-1, then the smaller C."""
  scores = {}  # log10 C -> held-out top-1; exponents are multiples of 1/4, exact in binary

  def score(log10_c: float) -> None:
    if log10_c not in scores:
      classifier = fit(fit_x, fit_y, 10.0**log10_c)
      scores[log10_c] = float(classifier.score(held_x, held_y))
      log(f'C {10.0**log10_c:.3g}: held-out top-1 {100 * scores[log10_c]:.2f}%')

  def best() -> float:
    return max(scores, key=lambda k: (scores[k], -k))

  for log10_c in COARSE_LOG10_C:
    score(float(log10_c))
  for step in REFINE_LOG10_STEPS:
    centre = best()
    for log10_c in (centre - step, centre + step):
      if COARSE_LOG10_C[0] <= log10_c <= COARSE_LOG10_C[-1]:
        score(log10_c)
  return 10.0 ** best(), {10.0**k: v for k, v in sorted(scores.items())}


def extract_features(
  inference,
  data: datasets.ClassificationDataset,
  indices: Sequence[int],
  kind: str,
  image_size: int,
  batch_size: int,
  workers: int,
  what: str,
) -> np.ndarray:
  """float32 [len(indices), D] features of `kind` (FEATURES) of the images, resized and
  centre-cropped to image_size as the zero-shot ImageNet evaluation does."""
  # JAX loads with these, after argument parsing: --help stays quick.
  from groupvit_jax.evaluators import common  # pylint: disable=g-import-not-at-top
  from groupvit_jax.evaluators import zero_shot_classification as zsc  # pylint: disable=g-import-not-at-top

  resize = round(image_size * 256 / 224)
  encode = inference.image_features if kind == 'pooled' else inference.encode_image

  def load(i):
    image, label = data.load(i)
    return zsc.resize_centre_crop(image, resize, image_size), label

  progress = Progress(len(indices), what=what)
  rows = []
  for batch in common.batches(datasets.prefetch(load, indices, workers), batch_size):
    images = np.zeros((batch_size, image_size, image_size, 3), np.uint8)  # one shape: one compile
    images[: len(batch)] = [image for image, _ in batch]
    rows.append(encode(images)[: len(batch)])
    progress.update(len(batch))
  progress.finish()
  return np.concatenate(rows).astype(np.float32)


def run(
  checkpoint: str,
  data_dir: str,
  dataset: str = 'imagenet',
  features: str = 'pooled',
  holdout_fraction: float = 0.1,
  max_train_per_class: int | None = None,
  max_val_examples: int | None = None,
  image_size: int | None = None,
  seed: int = 0,
  json_path: str | None = None,
  batch_size: int = 64,
  workers: int = 8,
) -> dict:
  """Probes `checkpoint`'s frozen features on `dataset`; returns (and optionally writes) the
  results."""
  import jax  # pylint: disable=g-import-not-at-top  # after argument parsing: --help stays quick

  from groupvit_jax.evaluators import zero_shot_classification as zsc  # pylint: disable=g-import-not-at-top

  if features not in FEATURES:
    raise ValueError(f'unknown features {features!r}; expected one of {", ".join(FEATURES)}')
  if not 0 < holdout_fraction < 1:
    raise ValueError(f'holdout_fraction must lie between 0 and 1, got {holdout_fraction}')
  start = time.time()
  train = open_split(dataset, data_dir, 'train')
  val = open_split(dataset, data_dir, 'val')
  if train.root == val.root:
    raise ValueError(f'train and val are the same folder, {train.root}; pass the one above both')
  check_same_classes(train, val)
  train_indices = per_class_subset(np.asarray(train.labels), max_train_per_class, seed)
  train_y = np.asarray(train.labels)[train_indices]
  if np.bincount(train_y).max() < 2:
    raise ValueError('every class has one training image: nothing to hold out for choosing C')
  val_indices = datasets.subset(len(val), max_val_examples)
  val_y = np.asarray(val.labels)[val_indices]

  inference = groupvit_jax.load(checkpoint)
  image_size = image_size or inference.config.get('vision', {}).get('image_size', 224)
  settings = (features, image_size, batch_size, workers)
  train_x = extract_features(inference, train, train_indices, *settings, 'train features')
  val_x = extract_features(inference, val, val_indices, *settings, 'val features')

  fit_part, held_part = stratified_holdout(train_y, holdout_fraction, seed)
  log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  best_c, scores = sweep_c(
    train_x[fit_part], train_y[fit_part], train_x[held_part], train_y[held_part], log
  )
  classifier = fit(train_x, train_y, best_c)
  probabilities = np.zeros((len(val_y), len(train.class_names)))
  probabilities[:, classifier.classes_] = classifier.predict_proba(val_x)
  result = {
    'top1': float(zsc.top_k_correct(probabilities, val_y, 1).mean()),
    'top5': float(zsc.top_k_correct(probabilities, val_y, 5).mean()),
    'C': best_c,
    'holdout_top1': scores[best_c],
    'sweep': [{'C': c, 'holdout_top1': top1} for c, top1 in scores.items()],
    'num_train': len(train_y),
    'num_holdout': len(held_part),
    'num_val': len(val_y),
    'num_classes': len(train.class_names),
    'features': features,
    'image_size': image_size,
    'checkpoint': checkpoint,
    'dataset': dataset,
    'data_dir': data_dir,
    'seconds': round(time.time() - start, 1),
    'device': str(jax.devices()[0].device_kind),
  }
  if json_path:
    filesystem.write_text(json_path, json.dumps(result, indent=2))
  return result


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m groupvit_jax.linear_probe', description=__doc__.split('\n')[0]
  )
  parser.add_argument(
    '--checkpoint', required=True, help='checkpoint dir, NVlabs .pth or Hugging Face dir'
  )
  parser.add_argument('--data_dir', required=True, help='holds the train/ and val/ splits')
  parser.add_argument(
    '--dataset',
    choices=DATASETS,
    default='imagenet',
    help='imagenet: 1000 WordNet-id class folders; folders: any class folders',
  )
  parser.add_argument(
    '--features', choices=FEATURES, default='pooled', help='pooled: before the projection head'
  )
  parser.add_argument(
    '--holdout_fraction',
    type=float,
    default=0.1,
    help='the part of each class held out to choose C',
  )
  parser.add_argument(
    '--max_train_per_class', type=positive_int, help='at most this many train images per class'
  )
  parser.add_argument(
    '--max_val_examples', type=positive_int, help='score this many val images, evenly spread'
  )
  parser.add_argument(
    '--image_size', type=positive_int, help="centre-crop side (default: the model's)"
  )
  parser.add_argument('--seed', type=int, default=0, help='train subset and held-out draw')
  parser.add_argument('--json', help='write the results to this JSON file')
  parser.add_argument('--batch_size', type=positive_int, default=64, help='images per call')
  parser.add_argument(
    '--workers', type=positive_int, default=8, help='threads reading images ahead of the model'
  )
  args = parser.parse_args(argv)
  try:
    result = run(
      args.checkpoint,
      args.data_dir,
      dataset=args.dataset,
      features=args.features,
      holdout_fraction=args.holdout_fraction,
      max_train_per_class=args.max_train_per_class,
      max_val_examples=args.max_val_examples,
      image_size=args.image_size,
      seed=args.seed,
      json_path=args.json,
      batch_size=args.batch_size,
      workers=args.workers,
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(
    f'{args.dataset} linear probe ({args.features} features): top-1 {100 * result["top1"]:.2f} '
    f'| top-5 {100 * result["top5"]:.2f} | C {result["C"]:.3g} | {result["num_train"]} train, '
    f'{result["num_val"]} val images'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
