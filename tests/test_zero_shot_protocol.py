"""The whole zero-shot protocol against an independent reference: transformers' PyTorch
GroupViT for the network, and the protocol written out in NumPy / torch from
docs/released_model.md, "Zero-shot segmentation protocol" (resize, windows, product of soft
maps, one-hot groups, top-5 masking, background, averaging)."""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import groupvit_jax
from groupvit_jax import segmentation, tokenizer
from groupvit_jax.inference import GroupViTInference

import hf_reference as ref

NAMES = ['cat', 'dog', 'grass', 'sky', 'car', 'tree', 'road']


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  hf = ref.make_model(seed=3, **ref.TINY)
  directory = tmp_path_factory.mktemp('hf')
  hf.save_pretrained(directory)
  return hf, groupvit_jax.load(str(directory))


def _softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _hf_text_features(hf, texts):
  ids = torch.from_numpy(tokenizer.tokenize(texts, 77).astype(np.int64))
  with torch.no_grad():
    return hf.get_text_features(input_ids=ids).pooler_output.numpy()


def _resize(image, short_side):
  h0, w0 = image.shape[:2]
  factor = short_side / min(h0, w0)
  h, w = int(h0 * factor + 0.5), int(w0 * factor + 0.5)
  x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
  resized = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)
  return resized.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)


def _hf_groups(hf, crop):
  """Normalised group embeddings [S, E], image embedding [E], per-stage soft maps."""
  with torch.no_grad():
    vision = hf.vision_model(pixel_values=ref.pixel_values(crop[None]), output_attentions=True)
    groups = hf.visual_projection(vision.last_hidden_state[0]).numpy()  # [S, E]
    pooled = hf.visual_projection(vision.pooler_output).numpy()[0]
  groups /= np.linalg.norm(groups, axis=-1, keepdims=True)
  return groups, pooled / np.linalg.norm(pooled), [a.numpy()[0] for a in vision.attentions]


def _reference_labels(hf, image, class_emb, threshold, short_side, window, stride):
  """The protocol, step by step, on one image with the PyTorch model."""
  h0, w0 = image.shape[:2]
  resized = _resize(image, short_side)
  h, w = resized.shape[:2]
  scale = min(float(hf.logit_scale.detach().exp()), 100.0)
  num_classes = len(class_emb)
  num_labels = num_classes + (threshold is not None)
  total, count = np.zeros((num_labels, h, w)), np.zeros((h, w))
  ys = sorted({min(y, h - window) for y in range(0, h - window + stride, stride)})
  xs = sorted({min(x0, w - window) for x0 in range(0, w - window + stride, stride)})
  for y in ys:
    for x0 in xs:
      groups, pooled, soft = _hf_groups(hf, resized[y : y + window, x0 : x0 + window])
      product = soft[0]
      for stage in soft[1:]:
        product = stage @ product  # [S_next, N]
      grid = (window // 16, window // 16)
      maps = F.interpolate(
        torch.from_numpy(product.reshape(1, -1, *grid)), (window, window), mode='bilinear'
      )[0].numpy()
      group_of_pixel = maps.argmax(axis=0)  # [h, w]
      logits = scale * groups @ class_emb.T  # [S, C]
      image_logits = scale * pooled @ class_emb.T
      keep = np.zeros(num_classes, bool)
      keep[np.argsort(-image_logits)[:5]] = True
      scores = _softmax(np.where(keep, logits, -np.inf)) * _softmax(logits)  # [S, C]
      fg = scores[group_of_pixel].transpose(2, 0, 1)  # [C, h, w]
      if threshold is not None:
        bg = fg.max(axis=0) < min(threshold, scores.max())
        fg = np.concatenate([bg[None].astype(fg.dtype), fg])
      total[:, y : y + window, x0 : x0 + window] += fg
      count[y : y + window, x0 : x0 + window] += 1
  averaged = torch.from_numpy((total / count)[None].astype(np.float32))
  back = F.interpolate(averaged, size=(h0, w0), mode='bilinear', align_corners=False)
  return back[0].numpy().argmax(axis=0)


@pytest.mark.parametrize('threshold', [None, 0.08])  # 0.08: background and classes mix
def test_segmenter_matches_the_protocol_written_out_with_pytorch(models, threshold):
  hf, ours = models
  image = ref.random_images(5, 1, 48, 80)[0]
  image[:, :40] //= 3  # a darker left part, so that groups differ across the image
  # Random text makes every group pick the same class. Classes made of the first window's own
  # group embeddings (and three random ones, so that top-5 masking drops two) split the image.
  groups, _, _ = _hf_groups(hf, _resize(image, 64)[:, :64])
  extra = np.random.default_rng(0).normal(size=(3, groups.shape[1]))
  class_emb = np.concatenate([groups, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
  segmenter = segmentation.Segmenter(ours, NAMES, threshold, short_side=64, window=64, stride=32)
  segmenter.class_emb = jax.numpy.asarray(class_emb, np.float32)
  got = segmenter(image)
  want = _reference_labels(hf, image, class_emb, threshold, 64, 64, 32)
  assert got.shape == (48, 80) and got.dtype == np.int32
  # Three overlapping windows over the 64 x 107 resized image; labels agree everywhere but
  # possibly at a few float-rounding ties.
  assert (got == want).mean() > 0.99, (got == want).mean()
  assert len(np.unique(want)) >= 3  # a uniform map would prove little
  # The batch path and the one-image path agree.
  np.testing.assert_array_equal(segmenter(np.stack([image, image]))[1], got)


def test_segment_api_labels_background_zero_and_classes_from_one(models):
  _, ours = models
  image = ref.random_images(6, 1, 40, 40)[0]
  plain = ours.segment(image, NAMES)
  assert plain.shape == (40, 40) and plain.min() >= 0 and plain.max() < len(NAMES)
  everything_background = ours.segment(image, NAMES, background_threshold=1.1)
  # min(1.1, best score) is the best score itself: only pixels of the best group stay.
  assert set(np.unique(everything_background)) <= set(range(len(NAMES) + 1))
  none_background = ours.segment(image, NAMES, background_threshold=0.0)
  np.testing.assert_array_equal(none_background, plain + 1)
  with pytest.raises(ValueError, match='one uint8 RGB image'):
    ours.segment(image[None], NAMES)
  with pytest.raises(TypeError, match='list of names'):
    ours.segment(image, 'cat')


def test_group_maps_are_the_stage_argmax_of_the_soft_products(models):
  hf, ours = models
  image = ref.random_images(7, 1, 64, 64)[0]
  maps = ours.group_maps(image, short_side=None)
  with torch.no_grad():
    vision = hf.vision_model(pixel_values=ref.pixel_values(image[None]), output_attentions=True)
  stage1, stage2 = [a.numpy()[0] for a in vision.attentions]
  for got, product in zip(maps, [stage1, stage2 @ stage1]):
    up = F.interpolate(torch.from_numpy(product.reshape(1, -1, 4, 4)), (64, 64), mode='bilinear')
    want = up[0].numpy().argmax(axis=0)
    assert got.shape == (64, 64) and got.dtype == np.int32
    assert (got == want).mean() > 0.99
  assert len(np.unique(maps[0])) > 1


def test_class_embeddings_average_unnormalised_features_as_released(models):
  hf, ours = models
  templates = ['itap of a {}.', 'a photo of the small {}.', 'art of the {}.']
  got = ours.class_embeddings(['cat', 'dog'], templates)
  features = _hf_text_features(hf, [t.format(n) for n in ['cat', 'dog'] for t in templates])
  mean = features.reshape(2, 3, -1).mean(axis=1)
  np.testing.assert_allclose(got, mean / np.linalg.norm(mean, axis=-1, keepdims=True), atol=1e-5)
  # Averaging normalised embeddings instead gives other vectors: the test can tell them apart.
  unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
  other = unit.reshape(2, 3, -1).mean(axis=1)
  other /= np.linalg.norm(other, axis=-1, keepdims=True)
  assert np.abs(other - got).max() > 1e-3


def test_batches_are_split_over_the_local_devices(models):
  _, ours = models
  assert jax.local_device_count() == 8  # tests/conftest.py
  one_device = GroupViTInference(ours.config, ours.variables, devices=jax.local_devices()[:1])
  images = ref.random_images(8, 3, 64, 64)  # 3 images: padded to 8 on the 8-device mesh
  sharded, single = ours.image_outputs(images), one_device.image_outputs(images)
  assert sharded.embedding.shape == (3, 32)
  assert len(sharded.embedding.sharding.device_set) == 8
  np.testing.assert_allclose(sharded.embedding, single.embedding, atol=1e-5)
  for a, b in zip(sharded.assignments, single.assignments):
    np.testing.assert_allclose(a.soft, b.soft, atol=1e-5)
