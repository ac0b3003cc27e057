"""Zero-shot segmentation of the synthetic held-out split (the embedded default's evaluator).

The protocol is the paper's (groupvit_jax/segmentation.py) on whole images, which are
smaller than its 448 window: "a photo of a {class}." embeddings of the eight shape names, the
group-to-class scores, and a background threshold for class 0.
"""

import numpy as np

from groupvit_jax import segmentation, visualize
from groupvit_jax.evaluators import group_metrics, metrics, zero_shot_segmentation
from input_pipeline import synthetic

_SCENE = synthetic.SyntheticConfig  # its class attributes are the scene defaults


class SyntheticSegmentation:
  """mIoU over the first `num_examples` held-out scenes, which are made once and kept, and
  (for a model with groups) the oracle mIoU of its final groups at the scenes' own size.

  The scene keys (min_objects ... textures) are input_pipeline.synthetic.SyntheticConfig's, with
  its defaults: a config gives the training data's values, so the held-out scenes come from the
  same world.
  """

  def __init__(
    self,
    image_size: int,
    num_examples: int = 500,
    background_threshold: float = 0.5,
    seed: int = 0,
    min_objects: int = _SCENE.min_objects,
    max_objects: int = _SCENE.max_objects,
    min_area: float = _SCENE.min_area,
    max_area: float = _SCENE.max_area,
    min_visible: float = _SCENE.min_visible,
    shape_colours: bool = _SCENE.shape_colours,
    textures: bool = _SCENE.textures,
    batch_size: int = 64,
    num_pictures: int = 8,
  ):
    config = synthetic.SyntheticConfig(
      image_size=image_size,
      min_objects=min_objects,
      max_objects=max_objects,
      min_area=min_area,
      max_area=max_area,
      min_visible=min_visible,
      shape_colours=shape_colours,
      textures=textures,
      seed=seed,
    )
    data = synthetic.batch(config, 'heldout', range(num_examples))
    self.images, self.masks = data['image'], data['mask']
    # The baseline the README compares with: every pixel labelled with the most frequent label.
    counts = np.bincount(self.masks.ravel(), minlength=len(synthetic.CLASS_NAMES))
    constant = np.full_like(self.masks, np.argmax(counts))
    conf = metrics.confusion_matrix(constant, self.masks, len(synthetic.CLASS_NAMES))
    self.baseline_miou = metrics.segmentation_metrics(conf, synthetic.CLASS_NAMES)['miou']
    self.background_threshold = background_threshold
    self.batch_size = batch_size
    self.num_pictures = min(num_pictures, num_examples)

  def run(self, inference) -> dict:
    """{'miou', 'macc', 'aacc', 'iou_<class>'..., 'most_frequent_label_miou', 'oracle_miou'}
    as fractions ('oracle_miou' for a model with groups)."""
    size = self.images.shape[1]
    result = zero_shot_segmentation.run(
      inference,
      self.images,
      self.masks,
      synthetic.CLASS_NAMES,
      self.background_threshold,
      batch_size=self.batch_size,
      window=size,
      stride=size,
      metric_names=('oracle',) if group_metrics.has_groups(inference) else (),
    )
    scores = {k: result[k] for k in ('miou', 'macc', 'aacc', 'oracle_miou') if k in result}
    scores.update({f'iou_{name}': v for name, v in result['per_class'].items()})
    scores['most_frequent_label_miou'] = self.baseline_miou
    return scores

  def pictures(self, inference) -> dict[str, np.ndarray]:
    """{'segmentation': uint8 [H, W, 3]}: per scene the image, true and predicted labels, and
    each stage's groups."""
    images, masks = self.images[: self.num_pictures], self.masks[: self.num_pictures]
    size = images.shape[1]
    segmenter = segmentation.Segmenter(
      inference,
      synthetic.CLASS_NAMES[1:],
      background_threshold=self.background_threshold,
      short_side=None,
      window=size,
      stride=size,
    )
    predictions = segmenter(images)
    stages = segmentation.stage_group_maps(inference.image_outputs(images), images.shape[1:3])
    class_colours = visualize.label_colours(len(synthetic.CLASS_NAMES))
    rows = [
      [
        image,
        visualize.colourize(masks[i], class_colours),
        visualize.colourize(predictions[i], class_colours),
        *visualize.group_overlays(image, [np.asarray(s[i]) for s in stages]),
      ]
      for i, image in enumerate(images)
    ]
    titles = ['image', 'truth', 'zero-shot'] + [f'stage {i + 1} groups' for i in range(len(stages))]
    legend = list(zip(synthetic.CLASS_NAMES, class_colours))
    scale = max(1, 128 // images.shape[1])
    return {'segmentation': visualize.panel(rows, titles, scale=scale, legend=legend)}
