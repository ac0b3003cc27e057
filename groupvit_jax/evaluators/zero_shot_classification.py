"""Zero-shot ImageNet classification, following GroupViT's released evaluation.

Images: shorter side resized to 256 (bilinear, Pillow, as torchvision's Resize), centre crop
224. Classes: each name in the seven SUBSET_TEMPLATES, text features averaged and normalised.
An image's prediction ranks the classes by cosine similarity with its embedding.
"""

from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from groupvit_jax.evaluators import common, datasets
from groupvit_jax.progress import Progress
from groupvit_jax.prompts import SUBSET_TEMPLATES


def resize_centre_crop(image: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [crop, crop, 3]: torchvision's Resize(resize) (shorter side,
  bilinear on the Pillow image) then CenterCrop(crop)."""
  h, w = image.shape[:2]
  if h <= w:
    size = (int(resize * w / h), resize)  # Pillow sizes are (width, height)
  else:
    size = (resize, int(resize * h / w))
  pil = Image.fromarray(image)
  if size != (w, h):
    pil = pil.resize(size, Image.BILINEAR)
  w, h = pil.size
  top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
  return np.asarray(pil.crop((left, top, left + crop, top + crop)))


class Classifier:
  """`classifier(images)` maps uint8 [B, H, W, 3] to cosine similarities [B, C] with the
  classes' zero-shot embeddings."""

  def __init__(
    self, inference, class_names: Sequence[str], templates: Sequence[str] = SUBSET_TEMPLATES
  ):
    self.inference = inference
    self.class_names = tuple(class_names)
    self.class_emb = inference.class_embeddings(self.class_names, templates)  # [C, E]

  def __call__(self, images) -> np.ndarray:
    return self.inference.encode_image(images) @ self.class_emb.T


def top_k_correct(similarities: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """bool [B]: whether each label is among its row's k highest classes (ties: lower index
  first, as a stable sort)."""
  top = np.argsort(-similarities, axis=1, kind='stable')[:, :k]
  return (top == np.asarray(labels)[:, None]).any(axis=1)


def evaluate(
  classifier: Classifier,
  examples: Iterable[tuple[np.ndarray, int, Any]],
  batch_size: int = 64,
  on_prediction: Callable[[Any, int], None] | None = None,
  progress: Progress | None = None,
) -> dict:
  """Streams this process's (image uint8 [224, 224, 3], label, key) through `classifier`:
  {'top1', 'top5'} as fractions and 'num_images' over every process's share. `on_prediction(key,
  class)` sees each of this process's top-1 classes."""
  counts = np.zeros(3, np.int64)  # top-1 correct, top-5 correct, images
  for batch in common.batches(examples, batch_size):
    similarities = classifier(np.stack([image for image, _, _ in batch]))
    labels = np.array([label for _, label, _ in batch])
    counts += [
      top_k_correct(similarities, labels, 1).sum(),
      top_k_correct(similarities, labels, 5).sum(),
      len(batch),
    ]
    if on_prediction is not None:
      for (_, _, key), row in zip(batch, similarities):
        on_prediction(key, int(np.argmax(row)))
    if progress is not None:
      progress.update(len(batch))
  correct1, correct5, total = common.process_sum(counts).tolist()
  if not total:
    raise ValueError('no images to classify')
  return {'top1': correct1 / total, 'top5': correct5 / total, 'num_images': total}


class ZeroShotClassification:
  """The evaluator plug-in for ImageNet's validation class folders (datasets.open_imagenet),
  used by `groupvit_jax.evaluate` and by the trainer. `max_examples` evaluates an evenly
  spread subset (None: all 50,000)."""

  def __init__(
    self,
    *,
    data_dir: str,
    dataset: str = 'imagenet',
    max_examples: int | None = None,
    batch_size: int = 64,
    workers: int = 8,
  ):
    self.data = datasets.open_dataset(dataset, data_dir)
    if not isinstance(self.data, datasets.ClassificationDataset):
      raise ValueError(f'{dataset} is not a classification dataset')
    self.indices = datasets.subset(len(self.data), max_examples)
    self.batch_size, self.workers = batch_size, workers

  def evaluate(self, inference, on_prediction=None, progress: Progress | None = None) -> dict:
    """{'top1', 'top5', 'num_images'}; each process classifies its share of the split."""
    ids = self.data.ids

    def load(i):
      image, label = self.data.load(i)
      return resize_centre_crop(image), label, ids[i]

    return evaluate(
      Classifier(inference, self.data.class_names),
      datasets.prefetch(load, common.process_share(self.indices), self.workers),
      self.batch_size,
      on_prediction,
      progress,
    )

  def run(self, inference) -> dict:
    """{'top1', 'top5'} as fractions."""
    result = self.evaluate(inference)
    return {'top1': result['top1'], 'top5': result['top5']}

  def pictures(self, inference) -> dict:
    """Classification draws nothing: {}."""
    del inference
    return {}
