"""The image tower's pieces against independent references, and its configurations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from groupvit_jax.models import vision


@pytest.mark.parametrize(
  'grid, new_grid',
  [((14, 14), (20, 16)), ((14, 14), (7, 9)), ((14, 14), (28, 28)), ((4, 6), (5, 3))],
)
def test_pos_embed_interpolation_matches_torch_bicubic(grid, new_grid):
  pos = np.random.default_rng(0).normal(size=(grid[0] * grid[1], 8)).astype(np.float32)
  ours = vision.interpolate_pos_embed(jnp.asarray(pos), grid, new_grid)
  torch_grid = torch.from_numpy(pos.reshape(1, *grid, 8)).permute(0, 3, 1, 2)
  expected = torch.nn.functional.interpolate(
    torch_grid, size=new_grid, mode='bicubic', align_corners=False
  )
  expected = expected.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
  np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_patch_embed_matches_torch_conv():
  images = np.random.default_rng(1).normal(size=(2, 70, 50, 3)).astype(np.float32)
  module = vision.PatchEmbed(patch_size=16, width=12)
  variables = module.init(jax.random.key(0), images)
  (tokens, grid) = module.apply(variables, images)
  kernel = np.asarray(variables['params']['kernel'])  # [p, p, C, D]
  conv = torch.nn.functional.conv2d(
    torch.from_numpy(images).permute(0, 3, 1, 2),
    torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()),
    torch.from_numpy(np.array(variables['params']['bias'])),
    stride=16,
  )
  x = conv.flatten(2).transpose(1, 2)  # [B, 4*3, D]
  x = torch.nn.functional.layer_norm(x, (12,), eps=1e-5).numpy()
  assert grid == (4, 3)
  np.testing.assert_allclose(tokens, x, atol=1e-5)


ONE_STAGE = dict(
  image_size=32,
  width=32,
  depths=(2, 2),
  num_heads=2,
  num_group_tokens=(8, 0),
  num_output_groups=(4,),
)
TWO_STAGE = dict(
  image_size=32,
  width=32,
  depths=(1, 1, 1),
  num_heads=2,
  num_group_tokens=(8, 4, 0),
  num_output_groups=(8, 2),
)


@pytest.mark.parametrize('config, maps', [(ONE_STAGE, [(4, 12)]), (TWO_STAGE, [(8, 12), (2, 8)])])
def test_stage_configurations_and_assignment_shapes(config, maps):
  images = jnp.zeros((3, 48, 64, 3))  # 3x4 patches
  tower = vision.VisionTower(**config)
  variables = jax.jit(tower.init)(jax.random.key(0), images)
  out = jax.jit(tower.apply)(variables, images)
  assert out.grid == (3, 4)
  assert out.tokens.shape == (3, config['num_output_groups'][-1], 32)
  assert [a.hard.shape[1:] for a in out.assignments] == maps
  # Products of the stages' assignments map every patch to exactly one final group.
  product = out.assignments[0].hard
  for assignment in out.assignments[1:]:
    product = jnp.einsum('bsn,bts->btn', product, assignment.hard)
  np.testing.assert_array_equal(np.asarray(product).sum(axis=1), 1.0)


@pytest.mark.parametrize(
  'bad, message',
  [
    (dict(num_group_tokens=(8, 4)), 'one entry per stage'),
    (dict(num_output_groups=(8,)), 'one entry per stage with group tokens'),
    (dict(num_group_tokens=(0, 4, 0), num_output_groups=(4,)), 'must come first'),
    (dict(num_heads=5), 'not divisible'),
  ],
)
def test_bad_configurations_are_rejected_clearly(bad, message):
  tower = vision.VisionTower(**{**TWO_STAGE, **bad})
  with pytest.raises(ValueError, match=message):
    tower.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_drop_path_only_in_training():
  tower = vision.VisionTower(**TWO_STAGE, drop_path_rate=0.5)
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = jax.jit(tower.init)(jax.random.key(0), images)
  apply = jax.jit(tower.apply, static_argnames='deterministic')

  def run(seed):
    return apply(
      variables,
      images,
      deterministic=False,
      rngs={'dropout': jax.random.key(seed), 'gumbel': jax.random.key(seed)},
    ).pooled

  eval_out = apply(variables, images).pooled
  np.testing.assert_array_equal(eval_out, apply(variables, images).pooled)
  assert not np.allclose(run(1), eval_out)
  np.testing.assert_array_equal(run(1), run(1))
