"""Zero-shot segmentation of a plain ViT's patch embeddings by non-parametric grouping (the
paper's Table 4 baselines): pixel-wise, K-means, mean-shift and spectral clustering, each group
scored by its mean embedding exactly as GroupViT's groups are."""

import numpy as np
import pytest
import test_vit_baseline as vit
from sklearn import cluster as sk_cluster

from groupvit_jax import nonparametric_grouping, segmentation
from groupvit_jax.inference import GroupViTInference

NAMES = ('cat', 'dog', 'car', 'tree', 'sky', 'road')  # six, so the top-5 mask drops one
PATCH = vit.PATCH


def quadrant_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
  """uint8 [n, H, W, 3]: four flat colours per image, plus noise, so that patches cluster."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, height, width, 3))
  h, w = height // 2, width // 2
  for image in images:
    for rows in (slice(0, h), slice(h, None)):
      for cols in (slice(0, w), slice(w, None)):
        image[rows, cols] = rng.integers(0, 256, 3)
  images += rng.normal(0, 20, images.shape)
  return np.clip(images, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def model():
  config = vit.model_config('cls')
  variables = vit.perturbed_variables(config, seed=5)
  variables['params']['logit_scale'] = np.float32(np.log(50.0))  # a trained model's sharpness
  return GroupViTInference(config, variables)


SIZE, THRESHOLD = 64, 0.5  # 4 x 4 patches; background below min(0.5, the best group score)


def segmenter(model, grouping, num_groups=3, stride=SIZE):
  """SIZE x SIZE windows every `stride` pixels on images as they are, with background."""
  return segmentation.Segmenter(
    model,
    NAMES,
    THRESHOLD,
    grouping=grouping,
    num_groups=num_groups,
    short_side=None,
    window=SIZE,
    stride=stride,
  )


def numpy_labels(group_emb, image_emb, class_emb, scale):
  """Each group's label, int [S], for one image's group embeddings [S, E] and embedding [E]:
  segmentation.group_class_scores and pixel_scores' background rule in NumPy."""

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  logits = scale * group_emb @ class_emb.T  # [S, C]
  top = np.argsort(-(scale * image_emb @ class_emb.T))[:5]
  keep = np.isin(np.arange(len(class_emb)), top)
  scores = softmax(np.where(keep, logits, -np.inf)) * softmax(logits)
  best = scores.max(-1)
  return np.where(best < min(THRESHOLD, best.max()), 0, scores.argmax(-1) + 1)


def same_partition(a, b) -> bool:
  """Two labellings [N] split the items the same way (up to renaming the groups)."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def group_labels(maps: np.ndarray) -> np.ndarray:
  """One-hot maps [S, N] -> each patch's group [N], checking each patch is in exactly one."""
  np.testing.assert_array_equal(maps.sum(axis=0), 1.0)
  return maps.argmax(axis=0)


def patch_centres(labels: np.ndarray) -> np.ndarray:
  """Label maps [B, H, W] at the pixel nearest each patch's centre -> [B, gh * gw]. There a
  bilinearly resized one-hot patch map weighs the patch itself 0.97^2 > 1/2, so the pixel takes
  that patch's group."""
  return labels[:, PATCH // 2 :: PATCH, PATCH // 2 :: PATCH].reshape(len(labels), -1)


def test_pixel_grouping_labels_each_patch_by_its_own_embedding(model):
  images = quadrant_images(0, 2, SIZE, SIZE)
  labels = segmenter(model, 'pixel')(images)

  out = model.image_outputs(images)
  class_emb, scale = model.class_embeddings(NAMES), model.logit_scale()
  for i in range(2):
    per_patch = numpy_labels(out.group_embeddings[i], out.embedding[i], class_emb, scale)
    # Every pixel of a 16 x 16 patch is nearest that patch's centre.
    expected = per_patch.reshape(4, 4).repeat(PATCH, axis=0).repeat(PATCH, axis=1)
    assert len(np.unique(expected)) > 1  # the comparison can tell patches apart
    np.testing.assert_array_equal(labels[i], expected)


def test_a_batch_of_several_windows_equals_its_images_one_at_a_time(model):
  images = quadrant_images(1, 2, SIZE, SIZE + 32)  # two windows each, 32 pixels apart
  seg = segmenter(model, 'kmeans', stride=32)
  batch = seg(images)
  np.testing.assert_array_equal(batch, np.stack([seg(image) for image in images]))


def test_kmeans_finds_well_separated_clusters_with_their_mean_embeddings():
  rng = np.random.default_rng(0)
  centres = rng.standard_normal((3, 16)) * 5
  truth = rng.permutation(np.arange(30) % 3)
  points = centres[truth] + rng.standard_normal((30, 16)) * 0.1
  points /= np.linalg.norm(points, axis=-1, keepdims=True)
  maps, groups = nonparametric_grouping.group_windows(points[None], 'kmeans', 3)
  assert maps.shape == (1, 3, 30) and groups.shape == (1, 3, 16)
  found = group_labels(maps[0])
  assert same_partition(found, truth)
  for g in range(3):
    mean = points[found == g].mean(axis=0)
    np.testing.assert_allclose(groups[0, g], mean / np.linalg.norm(mean), atol=1e-6)


def test_kmeans_partitions_are_sklearns_and_label_maps_follow_them(model):
  images = quadrant_images(2, 2, SIZE, SIZE)
  out = model.image_outputs(images)
  patches = np.asarray(out.group_embeddings)  # [2, 16, E]
  maps, _ = nonparametric_grouping.group_windows(patches, 'kmeans', 3)
  class_emb, scale = model.class_embeddings(NAMES), model.logit_scale()
  labels = patch_centres(segmenter(model, 'kmeans')(images))
  for i in range(2):
    expected = sk_cluster.KMeans(3, n_init=10, random_state=0).fit_predict(patches[i])
    assert same_partition(group_labels(maps[i]), expected)
    # Each cluster's pixels take the label of its L2-normalised mean embedding.
    means = np.stack([patches[i][expected == g].mean(0) for g in range(3)])
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    cluster_labels = numpy_labels(means, out.embedding[i], class_emb, scale)
    np.testing.assert_array_equal(labels[i], cluster_labels[expected])
  assert len(np.unique(labels)) > 1


@pytest.mark.parametrize('method', ['meanshift', 'spectral'])
def test_meanshift_and_spectral_groups_are_sklearns_and_labels_constant_within_them(model, method):
  images = quadrant_images(3, 1, SIZE, SIZE)  # one image: mean-shift is slow
  patches = np.asarray(model.image_outputs(images).group_embeddings)[0]  # [16, E]
  maps, _ = nonparametric_grouping.group_windows(patches[None], method, 3)
  labels = patch_centres(segmenter(model, method)(images))[0]
  if method == 'meanshift':
    bandwidth = sk_cluster.estimate_bandwidth(patches)
    expected = sk_cluster.MeanShift(bandwidth=bandwidth).fit_predict(patches)
  else:
    expected = sk_cluster.SpectralClustering(3, random_state=0).fit_predict(patches)
  found = group_labels(maps[0])
  assert (maps[0].sum(axis=1) > 0).sum() == len(np.unique(expected)) > 1
  assert same_partition(found, expected)
  assert all(len(np.unique(labels[found == g])) == 1 for g in np.unique(found))
  # Mean-shift's maps hold a slot per patch; spectral's num_groups.
  assert maps.shape == ((1, 16, 16) if method == 'meanshift' else (1, 3, 16))


def test_slots_past_the_groups_found_are_empty_copies_of_the_first():
  points = np.eye(4, dtype=np.float32)[None]  # 4 patches, 6 groups asked: 4 found
  maps, groups = nonparametric_grouping.group_windows(points, 'kmeans', 6)
  assert maps.shape == (1, 6, 4)
  assert maps[0, :4].sum(axis=1).tolist() == [1, 1, 1, 1] and not maps[0, 4:].any()
  np.testing.assert_array_equal(groups[0, 4:], groups[0, [0, 0]])
  # 'pixel': each patch alone, its embedding its own (renormalised).
  maps, groups = nonparametric_grouping.group_windows(points * 2, 'pixel', 6)
  np.testing.assert_array_equal(maps[0], np.eye(4))
  np.testing.assert_allclose(groups[0], np.eye(4))


def test_bad_groupings_are_refused(model):
  with pytest.raises(ValueError, match='pixel, kmeans, meanshift, spectral'):
    segmentation.Segmenter(model, NAMES, grouping=None)  # a ViT has no groups of its own
  with pytest.raises(ValueError, match="grouping is 'k-means'; expected one of"):
    segmenter(model, 'k-means')
  with pytest.raises(ValueError, match='num_groups must be a positive integer, got 0'):
    segmenter(model, 'kmeans', num_groups=0)
  groupvit = GroupViTInference(dict(vision={}, text={}), {})  # built, never run
  with pytest.raises(ValueError, match='a GroupViT does not have'):
    segmentation.Segmenter(groupvit, NAMES, grouping='kmeans')
  with pytest.raises(ValueError, match="grouping is 'dbscan'"):
    nonparametric_grouping.group_windows(np.ones((1, 4, 8)), 'dbscan', 2)
