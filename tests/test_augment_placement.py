"""Where the DeiT set runs changes nothing: the pipeline's batches augmented by the train step
(config.data.augment_on_device, the default) are the host-augmented batches, and the train
step's losses and gradients with the draws in the batch are those of the augmented images."""

import functools
import os

import jax
import numpy as np
from PIL import Image
from test_train_step import MESHES, MODEL, make_batch, on_mesh, relative_l2

from groupvit_jax.training import train
from groupvit_jax.weights import checkpoint
from input_pipeline import device_augment, image_transforms, web_pipeline, webdataset
from tests import shard_fixtures as fx


def _photo_shards(directory: str, count: int = 96) -> list[str]:
  """Two shards of noisy-gradient JPEGs of assorted sizes, where every op shows."""
  rng = np.random.default_rng(0)
  shards = []
  for s in range(2):
    samples = []
    for i in range(count // 2):
      width, height = (int(v) for v in rng.integers(160, 420, 2))
      y, x = np.mgrid[0:height, 0:width]
      base = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], -1)
      pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
      members = {
        'jpg': fx.encode(Image.fromarray(pixels), 'JPEG', quality=90),
        'txt': b'a dog on a red sofa next to a lamp',
      }
      samples.append((f'{s:02d}{i:05d}', members))
    path = os.path.join(directory, f'{s:05d}.tar')
    webdataset.write_shard(path, samples)
    shards.append(path)
  return shards


def _batches(paths, augment_on_device: bool, batches: int = 3) -> list[dict]:
  transform = image_transforms.TransformConfig(image_size=224, augment_on_device=augment_on_device)
  config = web_pipeline.PipelineConfig(transform=transform, shuffle_buffer=16)
  iterator = web_pipeline.WebDatasetIterator(web_pipeline.build(paths, 32, 5, config))
  try:
    return [next(iterator) for _ in range(batches)]
  finally:
    iterator.close()


def test_device_augmented_batches_are_the_host_augmented_batches(tmp_path):
  paths = _photo_shards(str(tmp_path))
  on_host = _batches(paths, augment_on_device=False)
  sent = _batches(paths, augment_on_device=True)
  augment = jax.jit(device_augment.augment)
  erased = applied = 0
  for host_batch, device_batch in zip(on_host, sent):
    assert set(host_batch) == {'image', 'text'}
    assert set(device_batch) == {'image', 'text', 'augment'}
    np.testing.assert_array_equal(device_batch['text'], host_batch['text'])
    images = np.asarray(augment(device_batch['image'], device_batch['augment']))
    # Outside the erased boxes, the same pixels; inside, noise from another generator.
    keep = np.ones(images.shape[:3], bool)
    for row, (top, left, h, w) in enumerate(device_batch['augment']['erase']):
      keep[row, top : top + h, left : left + w] = False
    np.testing.assert_array_equal(images[keep], host_batch['image'][keep])
    erased += int((~keep).any(axis=(1, 2)).sum())
    applied += int((device_batch['augment']['ops'] >= 0).sum())
  assert erased >= 10 and applied >= 60  # a quarter of 96 images erased, 96 ops applied


def test_train_step_applies_the_batch_draws():
  """loss_and_grads with 'augment' in the batch equals loss_and_grads on the images that
  device_augment.augment makes of them, on an 8-device mesh."""
  model = checkpoint.build_model(MODEL)
  init = jax.jit(lambda: model.init(jax.random.key(0), *checkpoint.init_inputs(model)))()
  state = train.TrainState(
    step=np.int32(3),
    params=init['params'],
    batch_stats=init['batch_stats'],
    opt_state=(),
    rng=jax.random.key_data(jax.random.key(1)),
  )
  batch = make_batch(0)
  rows, size = batch['image'].shape[:2]
  rng = np.random.default_rng(0)
  transform = image_transforms.TransformConfig(image_size=size)
  draws = [image_transforms.augment_params(rng, transform) for _ in range(rows)]
  draws = {k: np.stack([d[k] for d in draws]) for k in draws[0]}
  augmented = np.asarray(jax.jit(device_augment.augment)(batch['image'], draws))
  assert not np.array_equal(augmented, batch['image'])
  results = []
  for images, extra in ((batch['image'], {'augment': draws}), (augmented, {})):
    mesh, _, placed_state, placed = on_mesh(MESHES[1], state, dict(batch, image=images, **extra))
    fn = jax.jit(functools.partial(train.loss_and_grads, model, mesh))
    results.append(jax.device_get(fn(placed_state, placed)))
  (metrics, stats, grads), (metrics_before, stats_before, grads_before) = results
  assert np.isfinite(metrics['loss'])
  np.testing.assert_allclose(metrics['loss'], metrics_before['loss'], rtol=1e-6)
  assert relative_l2(grads, grads_before) < 1e-6
