"""A fine-tuned segmentation model (models/segmentation_head.py): inference, saving, loading.

Inference follows the supplement: the whole image resized to a 448 shorter side (bilinear,
the positional embedding interpolated to its patch grid), the patch-grid logits resized
bilinearly to the original image, argmax.

On disk: a directory with `config.json` ("format": "groupvit_jax_segmentation", the two-tower
model config the tower comes from, the class names) and orbax `variables/`.
"""

import functools
import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from groupvit_jax import filesystem, interpolation, segmentation
from groupvit_jax.image_ops import check_images, normalize_images
from groupvit_jax.models.segmentation_head import SegmentationModel, image_tower
from groupvit_jax.weights import checkpoint

FORMAT = 'groupvit_jax_segmentation'


class FinetunedSegmenter:
  """`segmenter(images)` maps uint8 RGB [B, H, W, 3] to int32 label maps [B, H, W] (labels
  0..num_labels-1); zero_shot_segmentation.evaluate scores it like a zero-shot Segmenter."""

  def __init__(
    self,
    model: SegmentationModel,
    variables: Mapping[str, Any],
    short_side: int | None = 448,
    max_long_side: int = 2048,
  ):
    self.model, self.variables = model, variables
    self.short_side, self.max_long_side = short_side, max_long_side
    self._labels = jax.jit(self._label_maps, static_argnames=('out_hw',))

  @property
  def num_labels(self) -> int:
    return self.model.num_classes

  def _label_maps(self, variables, images, out_hw):
    logits = self.model.apply(variables, normalize_images(images))  # [B, gh, gw, C]
    logits = interpolation.resize(logits, out_hw, 'bilinear', axes=(1, 2))  # [B, H, W, C]
    return logits.argmax(axis=-1).astype(np.int32)

  def __call__(self, images) -> np.ndarray:
    images = check_images(images)
    resized = segmentation.rescale_images(images, self.short_side, self.max_long_side)
    return np.asarray(self._labels(self.variables, resized, tuple(images.shape[1:3])))


def save(
  directory: str,
  model_config: Mapping[str, Any],
  class_names: Sequence[str],
  variables: Mapping[str, Any],
  metadata: Mapping[str, Any] | None = None,
) -> None:
  """Writes (over any earlier one) the variables, then `config.json`, which marks the
  directory complete (weights/checkpoint.save)."""
  checkpoint.save(
    directory,
    model_config,
    variables,
    {'class_names': list(class_names), **dict(metadata or {})},
    overwrite=True,
    file_format=FORMAT,
  )


def build(model_config: Mapping[str, Any], num_classes: int) -> SegmentationModel:
  """The segmentation model of a two-tower config's image tower, untrained."""
  two_towers = checkpoint.build_model(model_config)
  tower, _ = image_tower(two_towers, checkpoint.variable_shapes(two_towers))
  return SegmentationModel(tower, num_classes)


def load(directory: str, short_side: int | None = 448) -> tuple[FinetunedSegmenter, dict]:
  """(segmenter, config) of a directory `save` wrote."""
  directory = filesystem.abspath(directory)
  path = filesystem.join(directory, checkpoint.CONFIG_FILE)
  config = json.loads(filesystem.read_text(path)) if filesystem.isfile(path) else {}
  if not isinstance(config, dict) or config.get('format') != FORMAT:
    raise FileNotFoundError(f'{directory} holds no fine-tuned segmentation model ({path})')
  model = build(config['model'], len(config['class_names']))
  image_size = config['model'].get('vision', {}).get('image_size', 224)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32)
  target = jax.eval_shape(functools.partial(model.init, jax.random.key(0)), images)
  variables = checkpoint.restore_variables(directory, target)
  return FinetunedSegmenter(model, variables, short_side), config
