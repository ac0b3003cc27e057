"""The device mesh and how arrays are laid out on it; model code never mentions devices.

Mesh axes: 'data' (pure data parallelism) and 'fsdp' (data parallelism that also shards
parameters and optimizer state). The batch is split over both axes, so every device holds
global_batch / num_devices samples. Parameters are sharded over 'fsdp' along their largest
dimension that divides evenly, and replicated over 'data'.
"""

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')
# Parameters smaller than this stay replicated: sharding them saves no memory worth the
# all-gathers.
MIN_SHARDED_SIZE = 2**14


def make_mesh(mesh_config: Mapping[str, int], devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh. One of the two sizes may be -1: all remaining devices."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  data, fsdp = int(mesh_config.get('data', -1)), int(mesh_config.get('fsdp', 1))
  if data == -1 and fsdp == -1:
    raise ValueError('at most one of mesh.data and mesh.fsdp may be -1')
  if data == -1:
    data = devices.size // fsdp if fsdp > 0 and devices.size % fsdp == 0 else 0
  elif fsdp == -1:
    fsdp = devices.size // data if data > 0 and devices.size % data == 0 else 0
  if data <= 0 or fsdp <= 0 or data * fsdp != devices.size:
    raise ValueError(
      f'mesh data={mesh_config.get("data", -1)} x fsdp={mesh_config.get("fsdp", 1)} does not '
      f'fit the {devices.size} available devices'
    )
  return Mesh(devices.reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  if global_batch % mesh.size:
    raise ValueError(
      f'batch_size {global_batch} is not divisible by the {mesh.size} devices of the mesh; '
      f'use a multiple of {mesh.size}'
    )


def param_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  """Shard the largest dimension divisible by the fsdp axis; replicate small or odd shapes."""
  if fsdp_size == 1 or int(np.prod(shape)) < MIN_SHARDED_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      return P(*[('fsdp' if d == dim else None) for d in range(len(shape))])
  return P()


def param_shardings(mesh: Mesh, tree: Any) -> Any:
  """NamedShardings for a pytree of arrays or ShapeDtypeStructs (params, optimizer state)."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)), tree)
