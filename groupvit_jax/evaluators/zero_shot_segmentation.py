"""Zero-shot semantic segmentation, following GroupViT's released evaluation protocol.

Per window: the stages' soft assignment maps are multiplied (patches -> final groups), resized
to the window and made one-hot by argmax; each group gets class scores from its embedding and
the class text embeddings; pixels take their group's scores. Windows' scores are averaged,
resized to the original image, and the argmax is scored with mmseg's metrics.
"""

import functools
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax import interpolation, visualize
from groupvit_jax.evaluators import datasets, metrics
from groupvit_jax.inference import check_images
from groupvit_jax.progress import Progress
from groupvit_jax.prompts import SIMPLE_TEMPLATES


def bilinear_resize(x: Any, out_hw: tuple[int, int]) -> jax.Array:
  """[..., H, W] -> [..., out_h, out_w], as torch's interpolate(mode='bilinear',
  align_corners=False). Separable weights, so no antialiasing when downsampling (unlike
  jax.image.resize's default)."""
  return interpolation.resize(x, out_hw, 'bilinear')


def _pixel_group_scores(
  assignments_soft: Sequence[jax.Array], grid: tuple[int, int], out_hw: tuple[int, int]
) -> jax.Array:
  """Per-stage soft maps [B, S_out, N_in] -> their product, resized: [B, S_last, H, W]."""
  maps = assignments_soft[0]  # [B, S_1, N]
  for stage in assignments_soft[1:]:
    maps = jnp.einsum('bts,bsn->btn', stage, maps)  # [B, S_next, N]
  b, s, _ = maps.shape
  return bilinear_resize(maps.reshape(b, s, *grid), out_hw)  # [B, S, H, W]


def group_to_pixel_assignment(
  assignments_soft: Sequence[jax.Array], grid: tuple[int, int], out_hw: tuple[int, int]
) -> jax.Array:
  """Per-stage soft maps [B, S_out, N_in] -> one-hot pixel-to-final-group map [B, S, H, W]."""
  scores = _pixel_group_scores(assignments_soft, grid, out_hw)
  return jax.nn.one_hot(jnp.argmax(scores, axis=1), scores.shape[1], axis=1, dtype=jnp.float32)


def stage_group_maps(
  assignments_soft: Sequence[jax.Array], grid: tuple[int, int], out_hw: tuple[int, int]
) -> list[jax.Array]:
  """The group each pixel belongs to after each grouping stage: int32 [B, H, W] per stage."""
  return [
    jnp.argmax(_pixel_group_scores(assignments_soft[: i + 1], grid, out_hw), axis=1).astype(
      jnp.int32
    )
    for i in range(len(assignments_soft))
  ]


def group_class_scores(
  group_embeddings: jax.Array,
  image_embedding: jax.Array,
  class_emb: jax.Array,
  logit_scale: float,
  top_k: int = 5,
) -> jax.Array:
  """Group-to-class scores [B, S, C].

  Softmax over the image's top-k classes (by its average embedding; others -inf), times the
  softmax over all classes of the same unmasked logits.
  """
  num_classes = class_emb.shape[0]
  logits = logit_scale * jnp.einsum('bse,ce->bsc', group_embeddings, class_emb)
  image_logits = logit_scale * image_embedding @ class_emb.T  # [B, C]
  _, top = jax.lax.top_k(image_logits, min(top_k, num_classes))  # [B, k]
  keep = (top[:, :, None] == jnp.arange(num_classes)).any(axis=1)  # [B, C]
  masked = jnp.where(keep[:, None, :], logits, -jnp.inf)
  return jax.nn.softmax(masked, axis=-1) * jax.nn.softmax(logits, axis=-1)


def pixel_scores(
  group_map: jax.Array, scores: jax.Array, background_threshold: float | None = None
) -> jax.Array:
  """One-hot group map [B, S, H, W] and group-class scores [B, S, C] -> pixel scores.

  Without a threshold: [B, C, H, W]. With one, class 0 is background, prepended
  ([B, 1 + C, H, W]): it scores 1 where a pixel's best foreground score is below
  min(threshold, the image's best group-class score), else 0.
  """
  fg = jnp.einsum('bshw,bsc->bchw', group_map, scores)
  if background_threshold is None:
    return fg
  thresh = jnp.minimum(background_threshold, scores.max(axis=(1, 2)))  # [B]
  bg = fg.max(axis=1) < thresh[:, None, None]  # [B, H, W]
  return jnp.concatenate([bg[:, None].astype(fg.dtype), fg], axis=1)


def segment_scores(
  group_map: jax.Array,
  group_embeddings: jax.Array,
  image_embedding: jax.Array,
  class_emb: jax.Array,
  logit_scale: float,
  background_threshold: float | None = None,
) -> jax.Array:
  """Pixel class scores [B, C, H, W] (background first when thresholded, see pixel_scores)."""
  scores = group_class_scores(group_embeddings, image_embedding, class_emb, logit_scale)
  return pixel_scores(group_map, scores, background_threshold)


def window_boxes(
  h: int, w: int, window: int = 448, stride: int = 224
) -> tuple[tuple[int, int, int, int], ...]:
  """mmseg's slide-inference windows over an h x w image, (top, left, bottom, right) each.

  Windows past the edge are shifted back inside; a side shorter than the window is one crop.
  """
  rows = max(h - window + stride - 1, 0) // stride + 1
  cols = max(w - window + stride - 1, 0) // stride + 1
  boxes = []
  for r in range(rows):
    for c in range(cols):
      bottom, right = min(r * stride + window, h), min(c * stride + window, w)
      boxes.append((max(bottom - window, 0), max(right - window, 0), bottom, right))
  return tuple(boxes)


def average_windows(window_scores: jax.Array, boxes, hw: tuple[int, int]) -> jax.Array:
  """Each window's scores [K, B, C, h, w] -> the image's [B, C, H, W], averaged where the
  K windows (`boxes`, as window_boxes gives them) overlap."""
  window_scores = jnp.asarray(window_scores)
  total = jnp.zeros(window_scores.shape[1:3] + tuple(hw), window_scores.dtype)
  count = np.zeros(hw, np.float32)
  for scores, (top, left, bottom, right) in zip(window_scores, boxes):
    total = total.at[:, :, top:bottom, left:right].add(scores)
    count[top:bottom, left:right] += 1
  return total / count


def rescale_size(h: int, w: int, short_side: int, max_long_side: int = 2048) -> tuple[int, int]:
  """mmcv's keep-ratio rescale: shorter side to `short_side`, longer side at most the cap."""
  factor = min(max_long_side / max(h, w), short_side / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


@functools.partial(jax.jit, static_argnames=('hw',))
def resize_images(images: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """uint8 [B, H, W, 3] -> uint8 [B, h, w, 3], bilinear and rounded (mmcv's Resize)."""
  x = bilinear_resize(jnp.moveaxis(images.astype(jnp.float32), -1, 1), hw)  # [B, 3, h, w]
  return jnp.clip(jnp.round(jnp.moveaxis(x, 1, -1)), 0, 255).astype(jnp.uint8)


def rescale_images(
  images: np.ndarray, short_side: int | None, max_long_side: int = 2048
) -> np.ndarray:
  """uint8 [B, H, W, 3] resized to a `short_side` shorter side (None: as they are)."""
  hw = images.shape[1:3]
  if not short_side:
    return images
  size = rescale_size(*hw, short_side, max_long_side)
  return images if size == hw else np.asarray(resize_images(images, size))


@functools.partial(
  jax.jit, static_argnames=('grid', 'boxes', 'hw', 'out_hw', 'background_threshold')
)
def _label_maps(
  soft_maps,
  group_embeddings,
  embedding,
  class_emb,
  logit_scale,
  grid,
  boxes,
  hw,
  out_hw,
  background_threshold,
):
  """The encoder's outputs for K windows of B images (window-major, [K * B, ...]) -> label
  maps int32 [B, out_h, out_w]. Compiled per image size; the transformer is not in here."""
  top, left, bottom, right = boxes[0]
  group_map = group_to_pixel_assignment(soft_maps, grid, (bottom - top, right - left))
  scores = segment_scores(
    group_map, group_embeddings, embedding, class_emb, logit_scale, background_threshold
  )  # [K * B, C, h, w]
  scores = scores.reshape(len(boxes), -1, *scores.shape[1:])  # [K, B, C, h, w]
  image_scores = average_windows(scores, boxes, hw)  # [B, C, H, W]
  if tuple(hw) != tuple(out_hw):
    image_scores = bilinear_resize(image_scores, out_hw)
  return jnp.argmax(image_scores, axis=1).astype(jnp.int32)


class Segmenter:
  """Zero-shot segmentation into one vocabulary with the released protocol.

  `segmenter(images)` maps uint8 RGB [B, H, W, 3] (or one [H, W, 3]) to int32 label maps
  [B, H, W] ([H, W]). With `background_threshold`, label 0 is background and class i of
  `class_names` is label i + 1; without, labels are 0..C-1. Images are resized to a
  `short_side` shorter side (None: kept), cut into `window` crops every `stride` pixels, and
  the averaged scores resized back to the input size.
  """

  def __init__(
    self,
    inference,
    class_names: Sequence[str],
    background_threshold: float | None = None,
    templates: Sequence[str] = SIMPLE_TEMPLATES,
    short_side: int | None = 448,
    window: int = 448,
    stride: int = 224,
    max_long_side: int = 2048,
    max_crops: int = 16,
  ):
    if isinstance(class_names, str):
      raise TypeError('class_names must be a list of names, not one string')
    if not class_names:
      raise ValueError('class_names is empty')
    self.inference = inference
    self.class_names = tuple(class_names)
    self.background_threshold = (
      None if background_threshold is None else float(background_threshold)
    )
    self.class_emb = jnp.asarray(inference.class_embeddings(self.class_names, templates))
    self.logit_scale = inference.logit_scale()
    self.short_side, self.window, self.stride = short_side, window, stride
    self.max_long_side, self.max_crops = max_long_side, max_crops

  @property
  def num_labels(self) -> int:
    return len(self.class_names) + (self.background_threshold is not None)

  def __call__(self, images) -> np.ndarray:
    single = np.ndim(images) == 3
    images = check_images(images)
    out_hw = images.shape[1:3]
    images = rescale_images(images, self.short_side, self.max_long_side)
    hw = images.shape[1:3]
    boxes = window_boxes(*hw, self.window, self.stride)
    crops = np.concatenate(
      [images[:, top:bottom, left:right] for top, left, bottom, right in boxes]
    )  # [K * B, h, w, 3]
    outputs = [
      self.inference.image_outputs(crops[i : i + self.max_crops])
      for i in range(0, len(crops), self.max_crops)
    ]
    soft = tuple(
      jnp.concatenate([o.assignments[stage].soft for o in outputs])
      for stage in range(len(outputs[0].assignments))
    )
    labels = _label_maps(
      soft,
      jnp.concatenate([o.group_embeddings for o in outputs]),
      jnp.concatenate([o.embedding for o in outputs]),
      self.class_emb,
      self.logit_scale,
      tuple(int(g) for g in outputs[0].grid),  # jit returns the grid as arrays
      boxes,
      hw,
      out_hw,
      self.background_threshold,
    )
    labels = np.asarray(labels)
    return labels[0] if single else labels


def evaluate(
  segmenter: Segmenter,
  examples: Iterable[tuple[np.ndarray, np.ndarray, Any]],
  class_names: Sequence[str],
  batch_size: int = 8,
  ignore_index: int = 255,
  on_prediction: Callable[[Any, np.ndarray], None] | None = None,
  progress: Progress | None = None,
) -> dict:
  """Streams (image uint8 [H, W, 3], mask [H, W], key) through `segmenter` and scores the
  label maps against the masks over the whole split (metrics.segmentation_metrics plus the
  'confusion_matrix'). Consecutive images of one size share a batch. `class_names` names the
  segmenter's labels; `on_prediction(key, labels)` sees each label map.
  """
  num_labels = len(class_names)
  if num_labels != segmenter.num_labels:
    raise ValueError(f'{num_labels} class names for a segmenter of {segmenter.num_labels} labels')
  conf = np.zeros((num_labels, num_labels), np.int64)

  def flush(batch):
    predictions = segmenter(np.stack([image for image, _, _ in batch]))
    for (image, mask, key), pred in zip(batch, predictions):
      mask = np.asarray(mask)
      if mask.shape != pred.shape:
        raise ValueError(f'{key}: mask {mask.shape} does not match its image {image.shape[:2]}')
      conf[:] += metrics.confusion_matrix(pred, mask, num_labels, ignore_index)
      if on_prediction is not None:
        on_prediction(key, pred)
    if progress is not None:
      progress.update(len(batch))

  batch = []
  for image, mask, key in examples:
    if batch and (len(batch) == batch_size or np.shape(image) != np.shape(batch[0][0])):
      flush(batch)
      batch = []
    batch.append((np.asarray(image), mask, key))
  if batch:
    flush(batch)
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
  """Zero-shot segmentation of in-memory uint8 RGB images [H, W, 3] against masks [H, W].

  A dataset whose class 0 is 'background' needs `background_threshold` (VOC 0.95, Context
  0.35, COCO-Object 0.95). `short_side` resizes images first (448 in the protocol). With
  `return_predictions`, 'predictions' holds the label maps.
  """
  with_bg = class_names[0] == 'background'
  if with_bg and background_threshold is None:
    raise ValueError("class 0 is 'background': pass background_threshold")
  if len(images_uint8) != len(masks):
    raise ValueError(f'{len(images_uint8)} images but {len(masks)} masks')
  segmenter = Segmenter(
    model_inference,
    class_names[1:] if with_bg else class_names,
    background_threshold if with_bg else None,
    templates,
    short_side,
    window,
    stride,
    max_long_side,
  )
  predictions = []
  result = evaluate(
    segmenter,
    zip(images_uint8, masks, range(len(masks))),
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
      inference, self.data.class_names[1:], self.background_threshold, **self.protocol
    )

  def _examples(self, indices):
    def load(i):
      image, mask = self.data.load(i)
      return image, mask, self.data.ids[i]

    return datasets.prefetch(load, indices, self.workers)

  def evaluate(self, inference, on_prediction=None, progress: Progress | None = None) -> dict:
    """The full result: metrics.segmentation_metrics plus 'confusion_matrix', 'num_images'."""
    result = evaluate(
      self.segmenter(inference),
      self._examples(self.indices),
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
    group_colours = colours[1:]
    for image, mask, key in self._examples(self.indices[: self.num_pictures]):
      groups = inference.group_maps(image, self.protocol['short_side'])
      row = [
        image,
        visualize.colourize(np.where(mask == 255, 0, mask), colours),
        visualize.colourize(segmenter(image), colours),
        *(visualize.blend(image, visualize.colourize(g, group_colours)) for g in groups),
      ]
      titles = ['image', 'truth', 'zero-shot'] + [f'stage {i + 1}' for i in range(len(groups))]
      visualize.save_png(
        os.path.join(directory, f'{key.replace("/", "_")}.png'), visualize.panel([row], titles)
      )
