"""contrastive_chunks (training/grad_cache.py): the chunked step's losses, BatchNorm statistics
and gradients are the one-shot step's, on 1 device and on an (8,) mesh, and its peak memory
falls with the number of chunks."""

import functools

import jax
import numpy as np
import pytest
from test_train_step import MESHES, MODEL, make_batch, on_mesh, relative_l2

from groupvit_jax.training import grad_cache, sharding, train
from groupvit_jax.weights import checkpoint
from tests import cli


@pytest.fixture(scope='module')
def model_and_state():
  """test_train_step's tiny model (Gumbel noise and drop path on) and its initial state."""
  model = checkpoint.build_model(MODEL)
  init = jax.jit(lambda: model.init(jax.random.key(0), *checkpoint.init_inputs(model)))()
  state = train.TrainState(
    step=np.int32(3),
    params=init['params'],
    batch_stats=init['batch_stats'],
    opt_state=(),
    rng=jax.random.key_data(jax.random.key(1)),
  )
  return model, state


def test_chunks_take_the_same_rows_of_every_shard_and_come_back_in_order():
  rows = np.arange(16)
  chunked = np.asarray(grad_cache.to_chunks(rows, chunks=2, shards=4))
  # 4 shards of 4 rows; chunk 0 takes the first 2 rows of each shard, chunk 1 the last 2.
  np.testing.assert_array_equal(chunked, [[0, 1, 4, 5, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15]])
  np.testing.assert_array_equal(grad_cache.from_chunks(chunked, shards=4), rows)
  images = np.arange(16 * 3 * 2).reshape(16, 3, 2)
  back = grad_cache.from_chunks(grad_cache.to_chunks(images, 4, 2), 2)
  np.testing.assert_array_equal(back, images)


@pytest.mark.parametrize(
  'mesh_config',
  [pytest.param(MESHES[0], marks=pytest.mark.slow), MESHES[1]],  # 53 s in CI on 1 device
  ids=['1_device', '8_devices'],
)
def test_chunked_losses_statistics_and_gradients_equal_the_one_shot_step(
  model_and_state, mesh_config
):
  model, state = model_and_state
  mesh, _, placed_state, placed_batch = on_mesh(mesh_config, state, make_batch(0))
  results = {}
  for chunks in (1, 2) if mesh_config == MESHES[1] else (1, 2, 4):
    fn = jax.jit(functools.partial(train.loss_and_grads, model, mesh, contrastive_chunks=chunks))
    results[chunks] = jax.device_get(fn(placed_state, placed_batch))
  metrics1, stats1, grads1 = results[1]
  assert np.isfinite(metrics1['loss'])
  for chunks, (metrics, stats, grads) in results.items():
    for key in ('loss', 'loss_image_text', 'loss_multi_label'):
      np.testing.assert_allclose(metrics[key], metrics1[key], rtol=1e-5, err_msg=(chunks, key))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats, stats1)
    assert relative_l2(grads, grads1) < 1e-5, (chunks, relative_l2(grads, grads1))


def test_a_batch_that_does_not_divide_into_chunks_per_device_is_an_error(model_and_state):
  model, state = model_and_state
  mesh, _, placed_state, placed_batch = on_mesh(MESHES[1], state, make_batch(0))
  fn = jax.jit(functools.partial(train.loss_and_grads, model, mesh, contrastive_chunks=4))
  with pytest.raises(ValueError, match='contrastive_chunks 4 x 8 devices does not divide'):
    fn(placed_state, placed_batch)


def test_peak_memory_falls_with_the_chunk_count(model_and_state):
  """XLA's memory analysis of the compiled step: temporaries for a batch of 128 (the towers'
  activations dominate) with 1, 2 and 4 chunks."""
  model, state = model_and_state
  wide = checkpoint.build_model(dict(MODEL, vision=dict(MODEL['vision'], width=64)))
  params = jax.eval_shape(lambda: wide.init(jax.random.key(0), *checkpoint.init_inputs(wide)))
  state = jax.eval_shape(
    lambda: state.replace(params=params['params'], batch_stats=params['batch_stats'])
  )
  mesh = sharding.make_mesh(MESHES[0], jax.devices()[:1])
  batch = {
    'image': jax.ShapeDtypeStruct((128, 32, 32, 3), np.uint8),
    'text': jax.ShapeDtypeStruct((128, 4, 16), np.int32),
  }
  temp = {}
  for chunks in (1, 2, 4):
    fn = jax.jit(functools.partial(train.loss_and_grads, wide, mesh, contrastive_chunks=chunks))
    temp[chunks] = fn.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
  assert temp[2] < 0.7 * temp[1] and temp[4] < 0.7 * temp[2], temp


@pytest.mark.parametrize(
  'devices,chunks',
  [pytest.param(1, 4, marks=pytest.mark.slow), pytest.param(8, 2, marks=pytest.mark.slow)],
)  # 70 s and 62 s in CI: the unit tests above give the same losses and gradients by default
def test_a_chunked_run_logs_the_losses_of_the_one_shot_run(tmp_path, devices, chunks):
  env = dict(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  rows = {}
  for n in (1, chunks):
    workdir = tmp_path / f'chunks_{n}'
    result = cli.run(
      'groupvit_jax.main',
      '--config=tests/tiny_train_config.py',
      f'--workdir={workdir}',
      '--config.total_steps=4',
      f'--config.contrastive_chunks={n}',
      **env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows[n] = cli.train_rows(workdir)
  assert sorted(rows[chunks]) == [1, 2, 3, 4]
  for step, row in rows[1].items():
    for key in ('loss', 'loss_image_text', 'loss_multi_label', 'grad_norm'):
      np.testing.assert_allclose(rows[chunks][step][key], row[key], rtol=1e-4, err_msg=(step, key))


def test_chunks_that_do_not_divide_the_batch_stop_the_run_at_start(tmp_path):
  result = cli.run(
    'groupvit_jax.main',
    '--config=tests/tiny_train_config.py',
    f'--workdir={tmp_path / "run"}',
    '--config.contrastive_chunks=4',
  )
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert 'contrastive_chunks 4' in last and 'multiple of 32' in last, last
  assert not (tmp_path / 'run').exists()
