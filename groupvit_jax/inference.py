"""The inference API: `groupvit_jax.load(path)` and the jitted encoders it returns."""

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from groupvit_jax import filesystem, segmentation, tokenizer
from groupvit_jax.image_ops import check_image, check_images, normalize_images
from groupvit_jax.models import groupvit
from groupvit_jax.models.groupvit import GroupViT, ImageOutput
from groupvit_jax.prompts import SIMPLE_TEMPLATES
from groupvit_jax.weights import checkpoint


class GroupViTInference:
  """A loaded GroupViT with jitted encoders. Each new input shape compiles once.

  Batches are split over the local devices (padded to a multiple of their count); the weights
  are replicated on each.
  """

  def __init__(self, model_config: Mapping[str, Any], variables: Mapping[str, Any], devices=None):
    self.config = dict(model_config)
    self.model: GroupViT = checkpoint.build_model(model_config)
    self.mesh = Mesh(np.asarray(jax.local_devices() if devices is None else devices), ('batch',))
    self.set_variables(variables)
    self.context_length = self.model.text.get('context_length', 77)
    self._image_fn = jax.jit(self._image_forward)
    self._text_fn = jax.jit(lambda v, t: self.model.apply(v, t, method=GroupViT.text_features))
    self._features_fn = jax.jit(
      lambda v, x: self.model.apply(v, normalize_images(x), method=GroupViT.image_features)
    )
    self._cls_attention_fn = jax.jit(
      lambda v, x: groupvit.cls_attention(self.model, v, normalize_images(x))
    )

  def set_variables(self, variables: Mapping[str, Any]) -> None:
    """Replaces the weights with others of the same shapes (e.g. a newer training step); the
    compiled encoders stay valid, so nothing recompiles."""
    self.variables = jax.device_put(variables, NamedSharding(self.mesh, P()))

  def _image_forward(self, variables, images_uint8) -> ImageOutput:
    return self.model.apply(variables, normalize_images(images_uint8), method=GroupViT.encode_image)

  def _on_devices(self, batch: np.ndarray) -> jax.Array:
    """[N, ...] padded to a multiple of the device count and split over the devices."""
    pad = -len(batch) % self.mesh.size
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    return jax.device_put(batch, NamedSharding(self.mesh, P('batch')))

  def image_outputs(self, images: Any) -> ImageOutput:
    """The full image-tower output (embeddings, group embeddings, assignment maps)."""
    images = check_images(images)
    out = self._image_fn(self.variables, self._on_devices(images))
    if len(images) == len(out.embedding):
      return out
    n = len(images)
    return out._replace(
      embedding=out.embedding[:n],
      group_embeddings=out.group_embeddings[:n],
      assignments=tuple(a._replace(hard=a.hard[:n], soft=a.soft[:n]) for a in out.assignments),
    )

  def encode_image(self, images: Any) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] (any H, W; not resized) -> L2-normalised float32 [N, E]."""
    return np.asarray(self.image_outputs(images).embedding)

  def image_features(self, images: Any) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] -> the image tower's pooled features float32 [N, width], before
    the projection head (linear probes read these)."""
    images = check_images(images)
    features = self._features_fn(self.variables, self._on_devices(images))
    return np.asarray(features[: len(images)], np.float32)

  def cls_attention(self, images: Any) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] -> a class-token ViT's attention from the class token to the
    patches in its last block, each head's softmax weights (the class token's own weight
    dropped, not renormalised): float32 [N, heads, H/p, W/p]. ValueError for a GroupViT or a
    mean-pooled ViT. Separate from the other encoders, which it does not slow."""
    images = check_images(images)
    weights = self._cls_attention_fn(self.variables, self._on_devices(images))
    return np.asarray(weights[: len(images)], np.float32)

  def text_features(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
    """A string or a list of strings -> projected text features float32 [N, E], not normalised."""
    tokens = tokenizer.tokenize(texts, self.context_length)
    features = [
      np.asarray(self._text_fn(self.variables, self._on_devices(tokens[i : i + batch_size])))
      for i in range(0, len(tokens), batch_size)
    ]
    return np.concatenate(features)[: len(tokens)]

  def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """A string or a list of strings -> L2-normalised float32 [N, E]."""
    features = self.text_features(texts)
    return features / np.linalg.norm(features, axis=-1, keepdims=True)

  def class_embeddings(
    self, class_names: Sequence[str], templates: Sequence[str] = SIMPLE_TEMPLATES
  ) -> np.ndarray:
    """One zero-shot classifier row per class, float32 [C, E]: as the released code builds
    them, the text features of every template averaged, then L2-normalised."""
    if isinstance(class_names, str):
      raise TypeError('class_names must be a list of names, not one string')
    texts = [t.format(name) for name in class_names for t in templates]
    features = self.text_features(texts).reshape(len(class_names), len(templates), -1)
    mean = features.mean(axis=1)  # [C, E]
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)

  def logit_scale(self) -> float:
    """The image-text temperature the model was trained with (exp, clamped at 100)."""
    scale, _ = self.model.apply(self.variables, method=GroupViT.temperatures)
    return float(scale)

  def segment(
    self,
    image: Any,
    class_names: Sequence[str],
    background_threshold: float | None = None,
    grouping: str | None = None,
    num_groups: int = 8,
  ) -> np.ndarray:
    """Zero-shot segmentation of one uint8 RGB image [H, W, 3] into `class_names`, with the
    released protocol (shorter side 448, 448 windows every 224 px): int32 [H, W]. With a
    `background_threshold` (0.95 on VOC), 0 is background and class i is label i + 1; without
    one, labels are 0..C-1. A ViT needs a `grouping` of its patches (segmentation.Segmenter)."""
    segmenter = segmentation.Segmenter(
      self, class_names, background_threshold, grouping=grouping, num_groups=num_groups
    )
    return segmenter(check_image(image))[0]

  def group_maps(self, image: Any, short_side: int | None = 448) -> list[np.ndarray]:
    """The group each pixel of one uint8 RGB image [H, W, 3] belongs to after each grouping
    stage: int32 [H, W] per stage. The whole image goes through the model at once, resized
    to a `short_side` shorter side (None: as it is)."""
    pixels = check_image(image)
    hw = pixels.shape[1:3]
    out = self.image_outputs(segmentation.rescale_images(pixels, short_side))
    return [np.asarray(m[0]) for m in segmentation.stage_group_maps(out, hw)]


def load(path: str, dtype: str | None = None) -> GroupViTInference:
  """Loads a groupvit_jax checkpoint directory, an NVlabs `.pth`, or a Hugging Face directory,
  local or at a URL (gs://...).

  `dtype` overrides the compute dtype ('float32' or 'bfloat16', e.g. bfloat16 on GPU/TPU);
  parameters stay float32 either way.
  """
  from groupvit_jax.weights import released  # pylint: disable=g-import-not-at-top  # torch

  if not filesystem.exists(path):
    raise FileNotFoundError(f'{path} does not exist')
  if dtype not in (None, 'float32', 'bfloat16'):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  if checkpoint.is_checkpoint(path):
    model_config, variables = checkpoint.load(path)
  else:
    model_config, variables, _ = released.convert(path)
  if dtype:
    model_config = dict(model_config, dtype=dtype)
  return GroupViTInference(model_config, variables)
