"""Exact gradients of a whole-batch loss with the memory of one chunk (GradCache, in JAX).

A contrastive loss couples every row of the global batch (each image is scored against every
text), so accumulating gradients over micro-batches changes the loss: fewer negatives. GradCache
(Gao et al., 2021) splits the backward pass instead:

  1. the features of the global batch, chunk by chunk, keeping no activations;
  2. the loss on all features at once and its gradient with respect to them; whatever follows
     the features (the projection heads' BatchNorm over the global batch) runs here, once;
  3. each chunk's features again, their vector-Jacobian product with that chunk's feature
     gradients accumulated into the parameter gradients.

The result is the gradient of the one-shot loss; peak memory is one chunk's activations plus
the features. The features must be the same whether computed in one piece or in chunks, so any
randomness in them is drawn per row (from keys by global row index, passed in `inputs`).

Chunk k takes the same rows of every device's shard of the batch, so every device works on
every chunk and no row moves between devices.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from groupvit_jax.training import sharding


def to_chunks(x: jax.Array, chunks: int, shards: int) -> jax.Array:
  """Rows [B, ...] -> [chunks, B / chunks, ...]; chunk k holds rows k*m .. (k+1)*m - 1 of each
  of the `shards` equal blocks of B (m = B / (shards * chunks)), block-major."""
  m = x.shape[0] // (shards * chunks)
  x = x.reshape(shards, chunks, m, *x.shape[1:])
  return jnp.swapaxes(x, 0, 1).reshape(chunks, shards * m, *x.shape[3:])  # via [chunks, shards, m]


def from_chunks(x: jax.Array, shards: int) -> jax.Array:
  """The inverse of to_chunks: [chunks, B / chunks, ...] -> [B, ...]."""
  chunks, rows = x.shape[:2]
  x = x.reshape(chunks, shards, rows // shards, *x.shape[2:])
  return jnp.swapaxes(x, 0, 1).reshape(chunks * rows, *x.shape[3:])  # via [shards, chunks, m]


def loss_and_grads(
  features: Callable[[Any, Any], Any],
  head: Callable[[Any, Any], tuple[jax.Array, Any]],
  params: Any,
  inputs: Any,
  chunks: int,
  mesh: Mesh,
) -> tuple[tuple[jax.Array, Any], Any]:
  """((loss, aux), d loss / d params) of `head(params, features(params, inputs))`.

  features: (params, inputs) -> a pytree of per-row features; every leaf of `inputs` and of
    the features has the global batch's rows first, split over the mesh's batch axes.
  head: (params, all features) -> (loss, aux).
  chunks: how many pieces the rows are embedded in; the global batch must divide by
    chunks x the number of devices.
  """
  shards = mesh.size
  rows = jax.tree.leaves(inputs)[0].shape[0]
  if rows % (shards * chunks):
    raise ValueError(
      f'contrastive_chunks {chunks} x {shards} devices does not divide the batch of {rows}'
    )
  chunked = NamedSharding(mesh, P(None, sharding.BATCH_AXES))

  def split(tree):
    return jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(to_chunks(x, chunks, shards), chunked), tree
    )

  def join(tree):
    return jax.tree.map(lambda x: from_chunks(x, shards), tree)

  chunk_inputs = split(inputs)
  # 1. Features of every chunk; nothing is kept for a backward pass.
  feats = join(jax.lax.map(lambda c: features(params, c), chunk_inputs))
  # 2. The loss over the whole batch, and its gradients for the heads and the features.
  (loss, aux), (grads, feat_grads) = jax.value_and_grad(head, argnums=(0, 1), has_aux=True)(
    params, feats
  )

  # 3. Each chunk again, pulling its feature gradients back into the parameters.
  def backward(total, chunk):
    chunk_inputs, chunk_grads = chunk
    _, pullback = jax.vjp(lambda p: features(p, chunk_inputs), params)
    (chunk_param_grads,) = pullback(chunk_grads)
    return jax.tree.map(jnp.add, total, chunk_param_grads), None

  grads, _ = jax.lax.scan(backward, grads, (chunk_inputs, split(feat_grads)))
  return (loss, aux), grads
