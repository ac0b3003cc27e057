"""The zero-shot segmentation evaluator: a dataset split through `segmentation.Segmenter`
(the released protocol), scored with mmseg's metrics over the whole split, and optionally
with the metrics of metrics.EXTRA_METRICS (boundary mIoU, oracle mIoU, mask probing)."""

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from groupvit_jax import visualize
from groupvit_jax.evaluators import boundary, common, datasets, group_metrics, metrics
from groupvit_jax.evaluators.metrics import extra_metric_names
from groupvit_jax.progress import Progress
from groupvit_jax.prompts import SIMPLE_TEMPLATES
from groupvit_jax.segmentation import Segmenter


def extra_metrics(
  names: Sequence[str],
  inference,
  class_names: Sequence[str],
  short_side: int | None,
  ignore_index: int = 255,
) -> list:
  """The accumulators (boundary.BoundaryIoU, group_metrics.OracleIoU, .MaskProbing) of the
  metrics `names` (extra_metric_names) for a model and a vocabulary whose class 0 is
  the background; a ViT's mask probing reads its CLS attention at a `short_side` shorter side."""
  accumulators = []
  for name in extra_metric_names(names):
    if name == 'boundary':
      accumulators.append(boundary.BoundaryIoU(len(class_names), ignore_index))
    elif name == 'oracle':
      if not group_metrics.has_groups(inference):
        raise ValueError('oracle needs a model with groups (GroupViT), not a ViT')
      accumulators.append(group_metrics.OracleIoU(class_names, ignore_index))
    else:
      if class_names[0] != 'background':
        raise ValueError("mask_probing needs a dataset whose class 0 is 'background'")
      heads = None
      if not group_metrics.has_groups(inference):
        heads = group_metrics.head_masks(inference, short_side)
      accumulators.append(group_metrics.MaskProbing(heads, ignore_index=ignore_index))
  return accumulators


def evaluate(
  segmenter: Segmenter,
  examples: Iterable[tuple[np.ndarray, np.ndarray, Any]],
  class_names: Sequence[str],
  batch_size: int = 8,
  ignore_index: int = 255,
  on_prediction: Callable[[Any, np.ndarray], None] | None = None,
  progress: Progress | None = None,
  metric_names: Sequence[str] = (),
) -> dict:
  """Streams this process's (image uint8 [H, W, 3], mask [H, W], key) through `segmenter` and
  scores the label maps against the masks over the whole split, every process's counts summed
  (metrics.segmentation_metrics plus the 'confusion_matrix', and the results of the
  `metric_names` of metrics.EXTRA_METRICS). Groups come from the segmenter's model at its
  shorter side. Consecutive images of one size share a batch. `class_names` names the
  segmenter's labels; `on_prediction(key, labels)` sees each of this process's label maps.
  """
  num_labels = len(class_names)
  if num_labels != segmenter.num_labels:
    raise ValueError(f'{num_labels} class names for a segmenter of {segmenter.num_labels} labels')
  extras = []
  if metric_names:  # models of their own (fine-tuned heads) segment without an `inference`
    inference = segmenter.inference
    extras = extra_metrics(metric_names, inference, class_names, segmenter.short_side, ignore_index)
  needs_groups = any(extra.needs_groups for extra in extras)
  conf = np.zeros((num_labels, num_labels), np.int64)
  for batch in common.batches(examples, batch_size):
    predictions = segmenter(np.stack([image for image, _, _ in batch]))
    for (image, mask, key), pred in zip(batch, predictions):
      mask = np.asarray(mask)
      if mask.shape != pred.shape:
        raise ValueError(f'{key}: mask {mask.shape} does not match its image {image.shape[:2]}')
      conf += metrics.confusion_matrix(pred, mask, num_labels, ignore_index)
      groups = inference.group_maps(image, segmenter.short_side)[-1] if needs_groups else None
      for extra in extras:
        extra.update(image, mask, pred, groups)
      if on_prediction is not None:
        on_prediction(key, pred)
    if progress is not None:
      progress.update(len(batch))
  conf = common.process_sum(conf)
  extra_counts = common.process_sum([extra.counts() for extra in extras]) if extras else []
  result = metrics.segmentation_metrics(conf, class_names)
  result['confusion_matrix'] = conf
  for extra, counts in zip(extras, extra_counts):
    result.update(extra.result(counts))
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
  metric_names: Sequence[str] = (),
) -> dict:
  """Zero-shot segmentation of in-memory uint8 RGB images [H, W, 3] against masks [H, W],
  every process given the whole split and scoring its share (common.process_share).

  A dataset whose class 0 is 'background' needs `background_threshold` (VOC 0.95, Context
  0.35, COCO-Object 0.95). `short_side` resizes images first (448 in the protocol). With
  `return_predictions`, 'predictions' holds this process's label maps. `metric_names` adds
  metrics of metrics.EXTRA_METRICS (see `evaluate`).
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
    metric_names=metric_names,
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
  `metrics` adds some of metrics.EXTRA_METRICS ('boundary,oracle' or a list); `grouping` (one
  of nonparametric_grouping.METHODS, for a ViT; None: a GroupViT's own groups) and
  `num_groups` choose the segmenter's groups (segmentation.Segmenter).
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
    metrics: str | Sequence[str] | None = None,
    grouping: str | None = None,
    num_groups: int = 8,
  ):
    self.metric_names = extra_metric_names(metrics)
    self.data = datasets.open_dataset(dataset, data_dir)
    if not isinstance(self.data, datasets.SegmentationDataset):
      raise ValueError(f'{dataset} is not a segmentation dataset')
    self.indices = datasets.subset(len(self.data), max_examples)
    self.batch_size, self.workers, self.num_pictures = batch_size, workers, num_pictures
    self.background_threshold = (
      self.data.background_threshold if background_threshold is None else background_threshold
    )
    self.protocol = dict(short_side=short_side, window=window, stride=stride)
    self.grouping = dict(grouping=grouping, num_groups=num_groups)

  def segmenter(self, inference) -> Segmenter:
    return Segmenter(
      inference,
      self.data.class_names[1:],
      background_threshold=self.background_threshold,
      **self.protocol,
      **self.grouping,
    )

  def _examples(self, indices):
    def load(i):
      image, mask = self.data.load(i)
      return image, mask, self.data.ids[i]

    return datasets.prefetch(load, indices, self.workers)

  def evaluate(self, inference, on_prediction=None, progress: Progress | None = None) -> dict:
    """The full result: metrics.segmentation_metrics plus 'confusion_matrix', 'num_images'
    and the extra metrics' keys. Each process segments its share of the split;
    `on_prediction` sees that share."""
    result = evaluate(
      self.segmenter(inference),
      self._examples(common.process_share(self.indices)),
      self.data.class_names,
      self.batch_size,
      on_prediction=on_prediction,
      progress=progress,
      metric_names=self.metric_names,
    )
    result['num_images'] = len(self.indices)
    return result

  def run(self, inference) -> dict:
    """{'miou', 'macc', 'aacc', 'iou_<class>'...} as fractions, and the extra metrics'
    numbers ('boundary_miou', 'oracle_miou', 'mask_probing_jaccard', ...)."""
    result = self.evaluate(inference)
    # The means and the extra metrics' numbers: every plain number but the split's size.
    scores = {k: v for k, v in result.items() if isinstance(v, (int, float)) and k != 'num_images'}
    scores.update({f'iou_{name}': v for name, v in result['per_class'].items()})
    return scores

  def pictures(self, inference) -> dict[str, np.ndarray]:
    """{image id: uint8 [H, W, 3]} for the first `num_pictures` images: the image, true and
    predicted labels, and each stage's groups."""
    segmenter = self.segmenter(inference)
    colours = visualize.label_colours(256)
    pictures = {}
    for image, mask, key in self._examples(self.indices[: self.num_pictures]):
      groups = inference.group_maps(image, self.protocol['short_side'])
      row = [
        image,
        visualize.colourize(np.where(mask == 255, 0, mask), colours),
        visualize.colourize(segmenter(image), colours),
        *visualize.group_overlays(image, groups),
      ]
      titles = ['image', 'truth', 'zero-shot'] + [f'stage {i + 1}' for i in range(len(groups))]
      pictures[key.replace('/', '_')] = visualize.panel([row], titles)
    return pictures
