"""The train step does not depend on the mesh: 1 device, (8,) data and (4, 2) data x fsdp.

Gumbel noise and drop path are on, so this also checks that randomness is drawn for the global
batch rather than per device.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from groupvit_jax.training import optimizer, sharding, train
from groupvit_jax.weights import checkpoint

import hf_reference as ref

MODEL = dict(
  vision=dict(
    image_size=32,
    width=32,
    depths=(1, 1, 1),
    num_heads=2,
    num_group_tokens=(8, 4, 0),
    num_output_groups=(8, 4),
    drop_path_rate=0.2,
  ),
  text=dict(width=32, depth=1, num_heads=2, context_length=16),
  embed_dim=16,
  projection_hidden_dim=64,
)
OPTIMIZER = dict(
  lr=1e-3,
  warmup_lr=1e-4,
  min_lr=1e-5,
  weight_decay=0.05,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  grad_clip_norm=5.0,
)
BATCH, TEXTS = 16, 4
MESHES = [{'data': 1, 'fsdp': 1}, {'data': 8, 'fsdp': 1}, {'data': 4, 'fsdp': 2}]

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason='needs 8 (virtual) devices')


def make_batch(seed):
  """BATCH images and, per image, TEXTS token rows (caption and prompts) of length 16."""
  images = ref.random_images(seed, BATCH, 32, 32)
  tokens = ref.random_tokens(seed, BATCH * TEXTS, context=16).reshape(BATCH, TEXTS, 16)
  return {'image': images, 'text': tokens}


@pytest.fixture(scope='module')
def setup():
  model = checkpoint.build_model(MODEL)
  schedule = optimizer.schedule_from_config(
    OPTIMIZER, batch_size=BATCH, warmup_steps=2, total_steps=10
  )
  opt = optimizer.make_optimizer(OPTIMIZER, schedule)
  state = jax.jit(functools.partial(train.create_train_state, model, opt, 0))()
  return model, opt, state


def on_mesh(mesh_config, state, batch):
  devices = jax.devices()[: mesh_config['data'] * mesh_config['fsdp']]
  mesh = sharding.make_mesh(mesh_config, devices)
  shardings = train.state_shardings(mesh, state)
  return (
    mesh,
    shardings,
    jax.device_put(jax.tree.map(jnp.copy, state), shardings),  # the step donates it
    jax.device_put(batch, sharding.batch_sharding(mesh)),
  )


def relative_l2(a, b):
  """||a - b|| / ||b|| over whole gradient trees.

  Per-leaf ratios would be meaningless: several gradients are exactly zero by invariance
  (biases before BatchNorm or LayerNorm, the query bias of the assignment attention) and
  hold only rounding noise.
  """
  diff = sum(np.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return np.sqrt(diff / sum(np.sum(y**2) for y in jax.tree.leaves(b)))


def test_losses_and_gradients_do_not_depend_on_the_mesh(setup):
  model, _, state = setup
  batch = make_batch(0)

  def grad_fn(mesh):
    return jax.jit(functools.partial(train.loss_and_grads, model, mesh))

  results = []
  for mesh_config in MESHES:
    mesh, _, placed_state, placed_batch = on_mesh(mesh_config, state, batch)
    results.append(jax.device_get(grad_fn(mesh)(placed_state, placed_batch)))
  (metrics0, stats0, grads0) = results[0]
  assert np.isfinite(metrics0['loss']) and metrics0['loss'] > 0

  # The float32 noise floor: one device, the same weights without Gumbel noise or drop path
  # (so that permuting the batch changes no random draw), batch in two orders, which changes
  # only the order of every batch reduction.
  quiet = checkpoint.build_model(
    dict(MODEL, vision=dict(MODEL['vision'], gumbel=False, drop_path_rate=0.0))
  )
  perm = np.random.default_rng(1).permutation(BATCH)
  quiet_grads = []
  for b in (batch, {k: v[perm] for k, v in batch.items()}):
    mesh, _, placed_state, placed_batch = on_mesh(MESHES[0], state, b)
    fn = jax.jit(functools.partial(train.loss_and_grads, quiet, mesh))
    quiet_grads.append(jax.device_get(fn(placed_state, placed_batch))[2])
  floor = relative_l2(quiet_grads[1], quiet_grads[0])
  assert floor < 2e-4

  for metrics, stats, grads in results[1:]:
    for key in ('loss', 'loss_image_text', 'loss_multi_label'):
      np.testing.assert_allclose(metrics[key], metrics0[key], rtol=1e-5)
    # The mesh adds no error beyond reordering the same float32 sums.
    assert relative_l2(grads, grads0) <= max(1e-5, 3 * floor), (relative_l2(grads, grads0), floor)
    # BatchNorm statistics are over the global batch on every mesh.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats, stats0)


@pytest.mark.slow  # 64 s; the one-step mesh test above covers the same code in the default run
def test_losses_over_steps_agree_across_meshes_and_follow_the_schedule(setup):
  model, opt, state = setup
  schedule = optimizer.learning_rate_schedule(1e-3, 1e-4, 1e-5, 2, 10)
  losses = []
  for mesh_config in (MESHES[0], MESHES[2]):
    mesh, shardings, placed, _ = on_mesh(mesh_config, state, make_batch(0))
    step = train.make_train_step(model, opt, schedule, mesh, shardings)
    run_losses, lrs = [], []
    for i in range(3):
      placed, metrics = step(placed, jax.device_put(make_batch(i), sharding.batch_sharding(mesh)))
      run_losses.append(float(metrics['loss']))
      lrs.append(float(metrics['lr']))
    assert int(placed.step) == 3
    np.testing.assert_allclose(lrs, [1e-4, 1e-4 + 0.5 * (1e-3 - 1e-4), 1e-3], rtol=1e-6)
    losses.append(run_losses)
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_fsdp_shards_parameters_and_optimizer_state(setup):
  _, _, state = setup
  _, _, placed, _ = on_mesh(MESHES[2], state, make_batch(0))
  embedding = placed.params['text_encoder']['token_embedding']['embedding']  # [49408, 32]
  assert embedding.sharding.spec == jax.sharding.PartitionSpec('fsdp', None)
  assert embedding.addressable_shards[0].data.shape == (49408 // 2, 32)
  adam_mu = jax.tree.leaves(placed.opt_state[1][0].mu['text_encoder'])
  assert any(
    getattr(x.sharding, 'spec', None) == jax.sharding.PartitionSpec('fsdp', None) for x in adam_mu
  )


@pytest.mark.slow  # 48 s
def test_remat_changes_neither_parameters_nor_losses_nor_gradients(setup):
  model, _, state = setup
  remat = checkpoint.build_model(dict(MODEL, remat=True))
  assert jax.tree.structure(checkpoint.variable_shapes(remat)) == jax.tree.structure(
    {'params': state.params, 'batch_stats': state.batch_stats}
  )
  mesh, _, placed_state, placed_batch = on_mesh(MESHES[0], state, make_batch(0))
  plain = jax.jit(functools.partial(train.loss_and_grads, model, mesh))(placed_state, placed_batch)
  again = jax.jit(functools.partial(train.loss_and_grads, remat, mesh))(placed_state, placed_batch)
  np.testing.assert_allclose(again[0]['loss'], plain[0]['loss'], rtol=1e-6)
  # Recomputation may fuse differently: rounding only, far below the float32 floor that
  # test_losses_and_gradients_do_not_depend_on_the_mesh measures (about 6e-5).
  assert relative_l2(again[2], plain[2]) < 1e-5


def test_a_non_finite_loss_leaves_the_state_unchanged(setup):
  model, opt, state = setup
  mesh, shardings, placed, _ = on_mesh(MESHES[0], state, make_batch(0))
  step = train.make_train_step(model, opt, lambda s: 1e-3, mesh, shardings)
  poisoned = placed.replace(params=dict(placed.params, logit_scale=jnp.float32(jnp.nan)))
  before = jax.device_get(poisoned)
  after, metrics = step(poisoned, make_batch(0))
  assert not np.isfinite(metrics['loss'])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(after), before)
