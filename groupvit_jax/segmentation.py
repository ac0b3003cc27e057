"""Zero-shot segmentation with GroupViT's released protocol: `Segmenter`, and its pieces.

Per window: the stages' soft assignment maps are multiplied (patches -> final groups), resized
to the window and made one-hot by argmax; each group gets class scores from its embedding and
the class text embeddings; pixels take their group's scores. Windows' scores are averaged and
resized to the original image; the argmax is the label map. `inference.GroupViTInference`'s
`segment` and `group_maps` and the segmentation evaluators all use this module. A plain ViT's
groups come from non-parametric grouping of its patch embeddings (nonparametric_grouping), as
one-hot maps scored the same way.
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax import interpolation, nonparametric_grouping
from groupvit_jax.image_ops import check_images
from groupvit_jax.models import grouping
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
  maps = grouping.patch_to_segment_maps(assignments_soft)  # [B, S, N]
  b, s, _ = maps.shape
  return bilinear_resize(maps.reshape(b, s, *grid), out_hw)  # [B, S, H, W]


def group_to_pixel_assignment(
  assignments_soft: Sequence[jax.Array], grid: tuple[int, int], out_hw: tuple[int, int]
) -> jax.Array:
  """Per-stage soft maps [B, S_out, N_in] -> one-hot pixel-to-final-group map [B, S, H, W]."""
  scores = _pixel_group_scores(assignments_soft, grid, out_hw)
  return jax.nn.one_hot(jnp.argmax(scores, axis=1), scores.shape[1], axis=1, dtype=jnp.float32)


def patch_grid(output) -> tuple[int, int]:
  """An image output's patch grid (rows, columns) as ints: jit returns it as arrays."""
  return tuple(int(g) for g in output.grid)


def stage_group_maps(output, out_hw: tuple[int, int]) -> list[jax.Array]:
  """The group each pixel belongs to after each grouping stage of an image output
  (models.groupvit.ImageOutput): int32 [B, H, W] per stage, at `out_hw`."""
  soft = [a.soft for a in output.assignments]
  grid = patch_grid(output)
  return [
    jnp.argmax(_pixel_group_scores(soft[: i + 1], grid, out_hw), axis=1).astype(jnp.int32)
    for i in range(len(soft))
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

  `grouping` None takes the model's own groups (GroupViT's final groups); a plain ViT has none
  and needs one of nonparametric_grouping.METHODS ('pixel', 'kmeans', 'meanshift',
  'spectral'), which groups each window's patch embeddings (into `num_groups` for 'kmeans' and
  'spectral').
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
    grouping: str | None = None,
    num_groups: int = 8,
  ):
    if isinstance(class_names, str):
      raise TypeError('class_names must be a list of names, not one string')
    if not class_names:
      raise ValueError('class_names is empty')
    _check_grouping(inference.model.image_tower, grouping, num_groups)
    self.grouping, self.num_groups = grouping, num_groups
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
    group_embeddings = jnp.concatenate([o.group_embeddings for o in outputs])
    embedding = jnp.concatenate([o.embedding for o in outputs])

    def label_maps(soft, group_embeddings, embedding):
      labels = _label_maps(
        soft,
        group_embeddings,
        embedding,
        self.class_emb,
        self.logit_scale,
        patch_grid(outputs[0]),
        boxes,
        hw,
        out_hw,
        self.background_threshold,
      )
      return np.asarray(labels)

    if self.grouping is None:
      soft = tuple(
        jnp.concatenate([o.assignments[stage].soft for o in outputs])
        for stage in range(len(outputs[0].assignments))
      )
      labels = label_maps(soft, group_embeddings, embedding)
    else:
      maps, groups = nonparametric_grouping.group_windows(
        np.asarray(group_embeddings), self.grouping, self.num_groups
      )  # [K * B, S, N], [K * B, S, E]
      # One image's K windows (rows b, B + b, ...) at a time: with a group per patch the
      # one-hot pixel maps [K, S, h, w] are large.
      b = len(images)
      labels = np.concatenate(
        [label_maps((maps[i::b],), groups[i::b], embedding[i::b]) for i in range(b)]
      )
    return labels[0] if single else labels


def _check_grouping(image_tower: str, grouping: str | None, num_groups: int) -> None:
  """ValueError unless the model (config.model.image_tower) can be grouped as asked."""
  choices = ', '.join(nonparametric_grouping.METHODS)
  if grouping is None:
    if image_tower == 'vit':
      raise ValueError(f'a ViT has no groups of its own: choose a grouping, one of {choices}')
    return
  if image_tower != 'vit':
    raise ValueError(
      f"grouping {grouping!r} groups a ViT's patch embeddings, which a GroupViT does not "
      'have: use grouping None (its own groups)'
    )
  nonparametric_grouping.check(grouping, num_groups)
