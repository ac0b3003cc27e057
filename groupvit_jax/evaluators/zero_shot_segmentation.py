"""The zero-shot segmentation evaluator: a dataset split through `segmentation.Segmenter`
(the released protocol), scored with mmseg's metrics over the whole split."""

import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from groupvit_jax import visualize
from groupvit_jax.evaluators import common, datasets, metrics
from groupvit_jax.progress import Progress
from groupvit_jax.prompts import SIMPLE_TEMPLATES
from groupvit_jax.segmentation import Segmenter


def evaluate(
  segmenter: Segmenter,
  examples: Iterable[tuple[np.ndarray, np.ndarray, Any]],
  class_names: Sequence[str],
  batch_size: int = 8,
  ignore_index: int = 255,
  on_prediction: Callable[[Any, np.ndarray], None] | None = None,
  progress: Progress | None = None,
) -> dict:
  """Streams this process's (image uint8 [H, W, 3], mask [H, W], key) through `segmenter` and
  scores the label maps against the masks over the whole split, every process's confusion
  matrix summed (metrics.segmentation_metrics plus the 'confusion_matrix'). Consecutive images
  of one size share a batch. `class_names` names the segmenter's labels; `on_prediction(key,
  labels)` sees each of this process's label maps.
  """
  num_labels = len(class_names)
  if num_labels != segmenter.num_labels:
    raise ValueError(f'{num_labels} class names for a segmenter of {segmenter.num_labels} labels')
  conf = np.zeros((num_labels, num_labels), np.int64)
  for batch in common.batches(examples, batch_size):
    predictions = segmenter(np.stack([image for image, _, _ in batch]))
    for (image, mask, key), pred in zip(batch, predictions):
      mask = np.asarray(mask)
      if mask.shape != pred.shape:
        raise ValueError(f'{key}: mask {mask.shape} does not match its image {image.shape[:2]}')
      conf += metrics.confusion_matrix(pred, mask, num_labels, ignore_index)
      if on_prediction is not None:
        on_prediction(key, pred)
    if progress is not None:
      progress.update(len(batch))
  conf = common.process_sum(conf)
  result = metrics.segmentation_metrics(conf, class_names)
  result['confusion_matrix'] = conf
  return result


def run(
  model_inference,
  images_uint8: Sequence[np.ndarray],
  masks: Sequence[np.ndarray],
  class_names: Sequence[str],
  background_threshold: float | None = None,
  batch_size: int = 8,
  templates: Sequence[str] = SIMPLE_TEMPLATES,
  window: int = 448,
  stride: int = 224,
  short_side: int | None = None,
  max_long_side: int = 2048,
  ignore_index: int = 255,
  return_predictions: bool = False,
) -> dict:
  """Zero-shot segmentation of in-memory uint8 RGB images [H, W, 3] against masks [H, W],
  every process given the whole split and scoring its share (common.process_share).

  A dataset whose class 0 is 'background' needs `background_threshold` (VOC 0.95, Context
  0.35, COCO-Object 0.95). `short_side` resizes images first (448 in the protocol). With
  `return_predictions`, 'predictions' holds this process's label maps.
  """
  with_bg = class_names[0] == 'background'
  if with_bg and background_threshold is None:
    raise ValueError("class 0 is 'background': pass background_threshold")
  if len(images_uint8) != len(masks):
    raise ValueError(f'{len(images_uint8)} images but {len(masks)} masks')
  segmenter = Segmenter(
    model_inference,
    class_names[1:] if with_bg else class_names,
    background_threshold=background_threshold if with_bg else None,
    templates=templates,
    short_side=short_side,
    window=window,
    stride=stride,
    max_long_side=max_long_side,
  )
  predictions = []
  share = common.process_share(range(len(masks)))
  result = evaluate(
    segmenter,
    ((images_uint8[i], masks[i], i) for i in share),
    class_names,
    batch_size,
    ignore_index,
    on_prediction=(lambda _, pred: predictions.append(pred)) if return_predictions else None,
  )
  if return_predictions:
    result['predictions'] = predictions
  return result


class ZeroShotSegmentation:
  """The evaluator plug-in for a segmentation dataset on disk ('voc', 'context',
  'coco_object'; see datasets.py), used by `groupvit_jax.evaluate` and by the trainer.

  `max_examples` evaluates an evenly spread subset (None: the whole split); images are read by
  `workers` threads ahead of the model; `background_threshold` overrides the dataset's, and
  `short_side`, `window`, `stride` the protocol's 448 / 448 / 224 (e.g. for small test models).
  """

  def __init__(
    self,
    *,
    dataset: str,
    data_dir: str,
    max_examples: int | None = None,
    batch_size: int = 4,
    workers: int = 8,
    background_threshold: float | None = None,
    num_pictures: int = 4,
    short_side: int = 448,
    window: int = 448,
    stride: int = 224,
  ):
    self.data = datasets.open_dataset(dataset, data_dir)
    if not isinstance(self.data, datasets.SegmentationDataset):
      raise ValueError(f'{dataset} is not a segmentation dataset')
    self.indices = datasets.subset(len(self.data), max_examples)
    self.batch_size, self.workers, self.num_pictures = batch_size, workers, num_pictures
    self.background_threshold = (
      self.data.background_threshold if background_threshold is None else background_threshold
    )
    self.protocol = dict(short_side=short_side, window=window, stride=stride)

  def segmenter(self, inference) -> Segmenter:
    return Segmenter(
      inference,
      self.data.class_names[1:],
      background_threshold=self.background_threshold,
      **self.protocol,
    )

  def _examples(self, indices):
    def load(i):
      image, mask = self.data.load(i)
      return image, mask, self.data.ids[i]

    return datasets.prefetch(load, indices, self.workers)

  def evaluate(self, inference, on_prediction=None, progress: Progress | None = None) -> dict:
    """The full result: metrics.segmentation_metrics plus 'confusion_matrix', 'num_images'.
    Each process segments its share of the split; `on_prediction` sees that share."""
    result = evaluate(
      self.segmenter(inference),
      self._examples(common.process_share(self.indices)),
      self.data.class_names,
      self.batch_size,
      on_prediction=on_prediction,
      progress=progress,
    )
    result['num_images'] = len(self.indices)
    return result

  def run(self, inference) -> dict:
    """{'miou', 'macc', 'aacc', 'iou_<class>'...} as fractions."""
    result = self.evaluate(inference)
    scores = {k: result[k] for k in ('miou', 'macc', 'aacc')}
    scores.update({f'iou_{name}': v for name, v in result['per_class'].items()})
    return scores

  def write_pictures(self, inference, directory: str) -> None:
    """<id>.png per picture: the image, true and predicted labels, and each stage's groups."""
    segmenter = self.segmenter(inference)
    colours = visualize.label_colours(256)
    for image, mask, key in self._examples(self.indices[: self.num_pictures]):
      groups = inference.group_maps(image, self.protocol['short_side'])
      row = [
        image,
        visualize.colourize(np.where(mask == 255, 0, mask), colours),
        visualize.colourize(segmenter(image), colours),
        *visualize.group_overlays(image, groups),
      ]
      titles = ['image', 'truth', 'zero-shot'] + [f'stage {i + 1}' for i in range(len(groups))]
      visualize.save_png(
        os.path.join(directory, f'{key.replace("/", "_")}.png'), visualize.panel([row], titles)
      )
