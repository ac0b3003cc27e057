"""Zero-shot semantic segmentation, following GroupViT's released evaluation protocol.

Per window: the stages' soft assignment maps are multiplied (patches -> final groups), resized
to the window and made one-hot by argmax; each group gets class scores from its embedding and
the class text embeddings; pixels take their group's scores. Windows' scores are averaged,
resized to the original image, and the argmax is scored with mmseg's metrics.
"""

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax import interpolation
from groupvit_jax.evaluators import metrics
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


def class_embeddings(
  model_inference, class_names: Sequence[str], templates: Sequence[str] = SIMPLE_TEMPLATES
) -> np.ndarray:
  """One L2-normalised text embedding per class [C, E], averaged over the templates."""
  texts = [t.format(name) for name in class_names for t in templates]
  emb = np.asarray(model_inference.encode_text(texts), np.float32)
  emb = emb.reshape(len(class_names), len(templates), -1).mean(axis=1)  # [C, E]
  return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


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


def segment(*args, **kwargs) -> jax.Array:
  """segment_scores' argmax: label maps [B, H, W] int32."""
  return jnp.argmax(segment_scores(*args, **kwargs), axis=1).astype(jnp.int32)


def sliding_window_logits(
  fn: Callable[[np.ndarray], Any], images: np.ndarray, window: int = 448, stride: int = 224
) -> np.ndarray:
  """mmseg's slide inference: `fn` maps crops [B, h, w, 3] to scores [B, C, h, w]; images
  [B, H, W, 3] -> scores [B, C, H, W], averaged where windows overlap.

  Windows past the edge are shifted back inside; a side shorter than the window is one crop.
  """
  _, h, w, _ = images.shape
  rows = max(h - window + stride - 1, 0) // stride + 1
  cols = max(w - window + stride - 1, 0) // stride + 1
  total, count = None, np.zeros((h, w), np.float32)
  for r in range(rows):
    for c in range(cols):
      y2, x2 = min(r * stride + window, h), min(c * stride + window, w)
      y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
      scores = np.asarray(fn(images[:, y1:y2, x1:x2]), np.float32)
      if total is None:
        total = np.zeros(scores.shape[:2] + (h, w), np.float32)
      total[:, :, y1:y2, x1:x2] += scores
      count[y1:y2, x1:x2] += 1
  return total / count


def rescale_size(h: int, w: int, short_side: int, max_long_side: int = 2048) -> tuple[int, int]:
  """mmcv's keep-ratio rescale: shorter side to `short_side`, longer side at most the cap."""
  factor = min(max_long_side / max(h, w), short_side / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


@functools.partial(jax.jit, static_argnames=('grid', 'out_hw', 'background_threshold'))
def _window_scores(
  soft_maps,
  group_embeddings,
  embedding,
  class_emb,
  logit_scale,
  grid,
  out_hw,
  background_threshold,
):
  """One window's encoder outputs -> pixel class scores [B, C, h, w] (compiled per shape)."""
  group_map = group_to_pixel_assignment(soft_maps, grid, out_hw)
  return segment_scores(
    group_map, group_embeddings, embedding, class_emb, logit_scale, background_threshold
  )


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
  """Zero-shot segmentation of uint8 RGB images [H, W, 3] against masks [H, W] -> metrics.

  A dataset whose class 0 is 'background' needs `background_threshold` (VOC 0.95, Context
  0.35, COCO-Object 0.95). `short_side` resizes images first (448 in the protocol); scores are
  resized back to each mask's size. With `return_predictions`, 'predictions' holds the label
  maps.
  """
  with_bg = class_names[0] == 'background'
  if with_bg and background_threshold is None:
    raise ValueError("class 0 is 'background': pass background_threshold")
  if len(images_uint8) != len(masks):
    raise ValueError(f'{len(images_uint8)} images but {len(masks)} masks')
  class_emb = jnp.asarray(
    class_embeddings(model_inference, class_names[1:] if with_bg else class_names, templates)
  )
  logit_scale = model_inference.logit_scale()
  threshold = float(background_threshold) if with_bg else None

  def window_fn(crops):
    out = model_inference.image_outputs(crops)
    soft = tuple(a.soft for a in out.assignments)
    return _window_scores(
      soft,
      out.group_embeddings,
      out.embedding,
      class_emb,
      logit_scale,
      tuple(int(g) for g in out.grid),  # jit returns the grid as arrays
      crops.shape[1:3],
      threshold,
    )

  def resized(image):
    if short_side is None:
      return np.asarray(image)
    size = rescale_size(*image.shape[:2], short_side, max_long_side)
    x = bilinear_resize(jnp.moveaxis(jnp.asarray(image, jnp.float32), -1, 0), size)  # [3, h, w]
    return np.asarray(jnp.clip(jnp.round(jnp.moveaxis(x, 0, -1)), 0, 255)).astype(np.uint8)

  conf = np.zeros((len(class_names), len(class_names)), np.int64)
  predictions = []
  start = 0
  while start < len(images_uint8):
    # A batch: consecutive images of one size, so their windows run together.
    batch = [resized(images_uint8[start])]
    while (
      len(batch) < batch_size
      and start + len(batch) < len(images_uint8)
      and np.shape(images_uint8[start + len(batch)]) == np.shape(images_uint8[start])
    ):
      batch.append(resized(images_uint8[start + len(batch)]))
    scores = sliding_window_logits(window_fn, np.stack(batch), window, stride)  # [B, C, h, w]
    for i, image_scores in enumerate(scores):
      mask = np.asarray(masks[start + i])
      if image_scores.shape[1:] != mask.shape:
        image_scores = bilinear_resize(image_scores, mask.shape)
      pred = np.asarray(jnp.argmax(image_scores, axis=0)).astype(np.int32)
      conf += metrics.confusion_matrix(pred, mask, len(class_names), ignore_index)
      if return_predictions:
        predictions.append(pred)
    start += len(batch)

  result = metrics.segmentation_metrics(conf, class_names)
  result['confusion_matrix'] = conf
  if return_predictions:
    result['predictions'] = predictions
  return result
