"""Training: the train state and the sharded train step.

The step is one jit-compiled function over global arrays laid out on the mesh (see
sharding.py). The towers run as ordinary global computations, so the projection heads'
BatchNorm statistics are over the global batch; the losses run under shard_map, where each
device scores its own rows against all-gathered embeddings. Randomness (Gumbel noise, drop
path) is drawn for the global batch from a key folded with the step number, so a run does not
depend on the mesh it runs on.
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from groupvit_jax import checkpoint, losses, sharding
from groupvit_jax.image_ops import normalize_images
from groupvit_jax.models.groupvit import GroupViT


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: batches done (optimizer updates, without accumulation)
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # the run's base key (raw uint32 key data, checkpoint friendly)


def create_train_state(
  model: GroupViT,
  optimizer: optax.GradientTransformation,
  seed: int,
) -> TrainState:
  """Freshly initialised parameters and optimizer state."""
  init_rng, run_rng = jax.random.split(jax.random.key(seed))
  variables = model.init({'params': init_rng}, *checkpoint.init_inputs(model))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=optimizer.init(variables['params']),
    rng=jax.random.key_data(run_rng),
  )


def loss_and_grads(model: GroupViT, mesh: Mesh, state: TrainState, batch: dict):
  """Losses, metrics, new BatchNorm statistics and gradients for one global batch.

  batch: 'image' uint8 [B, H, W, 3]; 'text' int32 [B, 1 + K, L], the caption then K prompts.
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  gumbel_rng, dropout_rng = jax.random.split(step_rng)
  contrastive = jax.shard_map(
    functools.partial(losses.contrastive_losses, axis_name=sharding.BATCH_AXES),
    mesh=mesh,
    in_specs=(P(sharding.BATCH_AXES),) * 3 + (P(), P()),
    out_specs=P(),
  )

  def loss_fn(params):
    (image, text, (scale, multi_label_scale)), updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      normalize_images(batch['image']),
      batch['text'],
      rngs={'gumbel': gumbel_rng, 'dropout': dropout_rng},
      mutable=['batch_stats'],
      method=GroupViT.embed_for_training,
    )
    metrics = contrastive(image, text[:, 0], text[:, 1:], scale, multi_label_scale)
    metrics = dict(metrics, logit_scale=scale, multi_label_logit_scale=multi_label_scale)
    return metrics['loss'], (metrics, updates['batch_stats'])

  (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return metrics, batch_stats, grads


def make_train_step(
  model: GroupViT,
  optimizer: optax.GradientTransformation,
  schedule: Callable[[jax.Array], jax.Array],
  mesh: Mesh,
  state_shardings: Any,
  grad_accum_steps: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted step: (state, batch) -> (next state, metrics). The old state is donated.

  `state.step` counts batches; with gradient accumulation the optimizer (optax.MultiSteps)
  updates every `grad_accum_steps` of them, and the schedule advances with those updates.
  """

  def train_step(state: TrainState, batch: dict):
    metrics, batch_stats, grads = loss_and_grads(model, mesh, state, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    metrics = dict(
      metrics, grad_norm=optax.global_norm(grads), lr=schedule(state.step // grad_accum_steps)
    )
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
    )
    return new_state, metrics

  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(
    train_step,
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def state_shardings(mesh: Mesh, state_shapes: TrainState) -> TrainState:
  """Parameters and optimizer state sharded by the fsdp rule; step and rng replicated."""
  return TrainState(
    step=sharding.replicated(mesh),
    params=sharding.param_shardings(mesh, state_shapes.params),
    batch_stats=sharding.param_shardings(mesh, state_shapes.batch_stats),
    opt_state=sharding.param_shardings(mesh, state_shapes.opt_state),
    rng=sharding.replicated(mesh),
  )
