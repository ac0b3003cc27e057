"""Mesh construction and the fsdp parameter layout rule."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from groupvit_jax.training import sharding


def test_mesh_shapes_from_config():
  devices = jax.devices()
  mesh = sharding.make_mesh({'data': -1, 'fsdp': 1}, devices[:4])
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 1}
  mesh = sharding.make_mesh({'data': 2, 'fsdp': -1}, devices[:4])
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2}


@pytest.mark.parametrize(
  'config',
  [
    {'data': 3, 'fsdp': 1},
    {'data': -1, 'fsdp': 3},
    {'data': -1, 'fsdp': -1},
    {'data': 0, 'fsdp': 4},
  ],
)
def test_meshes_that_do_not_fit_are_rejected(config):
  with pytest.raises(ValueError, match='mesh|at most one'):
    sharding.make_mesh(config, jax.devices()[:4])


def test_batch_size_must_divide_over_devices():
  mesh = sharding.make_mesh({'data': -1}, jax.devices()[:1])
  sharding.check_batch_size(6, mesh)
  if len(jax.devices()) >= 4:
    mesh = sharding.make_mesh({'data': -1}, jax.devices()[:4])
    with pytest.raises(ValueError, match='not divisible by the 4 devices'):
      sharding.check_batch_size(6, mesh)


def test_param_spec_shards_largest_divisible_dim():
  assert sharding.param_spec((384, 1536), 2) == P(None, 'fsdp')
  assert sharding.param_spec((1536, 384), 4) == P('fsdp', None)
  assert sharding.param_spec((49408, 256), 8) == P('fsdp', None)
  assert sharding.param_spec((385, 1537), 2) == P()  # nothing divides
  assert sharding.param_spec((384,), 2) == P()  # small: replicated
  assert sharding.param_spec((384, 1536), 1) == P()  # no fsdp axis
