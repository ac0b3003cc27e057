"""Non-parametric grouping of a ViT's patch embeddings: the zero-shot baselines of Table 4.

A plain ViT has no groups of its own. Here each window's patch embeddings (projected and
L2-normalised, [N, E]) are grouped on the host: 'pixel' makes each patch its own group,
'kmeans' and 'spectral' cluster them into a given number of groups with scikit-learn, and
'meanshift' finds its own number (bandwidth estimated from the data). A group's embedding is
the L2-normalised mean of its patches' embeddings. The groups come out as one-hot
group-to-patch maps, so segmentation.Segmenter scores them exactly as GroupViT's groups.
"""

import numpy as np

METHODS = ('pixel', 'kmeans', 'meanshift', 'spectral')
# A fixed seed makes k-means' and spectral clustering's random initialisation, and so every run,
# the same.
SEED = 0
KMEANS_INITS = 10


def check(method: str, num_groups: int) -> None:
  """ValueError unless `method` is one of METHODS and `num_groups` a positive integer."""
  if method not in METHODS:
    raise ValueError(f'grouping is {method!r}; expected one of {", ".join(METHODS)}')
  if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
    raise ValueError(f'num_groups must be a positive integer, got {num_groups!r}')


def cluster(features: np.ndarray, method: str, num_groups: int) -> np.ndarray:
  """One window's patch embeddings [N, E] -> each patch's group, int64 [N], numbered 0..S-1
  (every number used). `num_groups` is the number of clusters for 'kmeans' and 'spectral' (at
  most N); 'pixel' (S = N) and 'meanshift' ignore it. Deterministic."""
  check(method, num_groups)
  n = len(features)
  if method == 'pixel':
    return np.arange(n)
  from sklearn import cluster as sk_cluster  # pylint: disable=g-import-not-at-top  # slow

  k = min(num_groups, n)
  if method == 'kmeans':
    labels = sk_cluster.KMeans(k, n_init=KMEANS_INITS, random_state=SEED).fit_predict(features)
  elif method == 'spectral':
    labels = sk_cluster.SpectralClustering(k, random_state=SEED).fit_predict(features)
  else:
    bandwidth = sk_cluster.estimate_bandwidth(features)
    if bandwidth <= 0:  # most embeddings coincide: one group
      return np.zeros(n, np.int64)
    labels = sk_cluster.MeanShift(bandwidth=bandwidth).fit_predict(features)
  return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def num_slots(method: str, num_groups: int, num_patches: int) -> int:
  """How many groups a window's maps hold (found groups, then padding): fixed per method and
  window size, so that the scoring compiles once. Mean-shift may find up to one per patch."""
  return num_groups if method in ('kmeans', 'spectral') else num_patches


def group_windows(
  patch_embeddings: np.ndarray, method: str, num_groups: int
) -> tuple[np.ndarray, np.ndarray]:
  """Each window's L2-normalised patch embeddings [W, N, E] -> (one-hot group-to-patch maps
  float32 [W, S, N], group embeddings float32 [W, S, E]), S = num_slots.

  Slots past the groups found have empty maps (no pixel takes them) and repeat the first
  group's embedding, so they change no score (not even the image's best group-class score
  that the background threshold reads).
  """
  check(method, num_groups)
  patch_embeddings = np.asarray(patch_embeddings, np.float32)
  windows, n, e = patch_embeddings.shape
  slots = num_slots(method, num_groups, n)
  maps = np.zeros((windows, slots, n), np.float32)
  groups = np.empty((windows, slots, e), np.float32)
  for i, features in enumerate(patch_embeddings):
    labels = cluster(features, method, num_groups)
    found = int(labels.max()) + 1
    maps[i, labels, np.arange(n)] = 1.0
    sums = maps[i, :found].astype(np.float64) @ features  # [found, E]
    means = sums / np.linalg.norm(sums, axis=-1, keepdims=True)
    groups[i, :found] = means
    groups[i, found:] = means[0]
  return maps, groups
