"""The fine-tuning step of fully-supervised transfer (Table 5, supplement 1.2).

Loss: per-pixel cross-entropy over the labelled pixels of the crop (label 255, and any label
outside the classes, ignored), on logits upsampled bilinearly from the patch grid to the crop
(align_corners=False, as mmseg resizes them).

Optimiser: the supplement's Adam with weight decay 0.05 at lr 1e-3, as AdamW (PyTorch's
betas and eps) with weight decay on matrices only (optimizer.weight_decay_mask, as the released
pre-training), and mmseg's usual 'poly' decay of the rate (power 0.9, to 0 at the last step):
the supplement names no schedule. No warm-up, no clipping. The tower runs in its training
mode: drop path and, for GroupViT, Gumbel noise in the hard assignments, as in pre-training.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from groupvit_jax import interpolation
from groupvit_jax.image_ops import normalize_images
from groupvit_jax.models.segmentation_head import SegmentationModel
from groupvit_jax.training.finetune_data import IGNORE_LABEL
from groupvit_jax.training.optimizer import weight_decay_mask

POLY_POWER = 0.9


@flax.struct.dataclass
class FinetuneState:
  step: jax.Array  # int32 scalar: updates done
  params: Any  # {'tower': ..., 'head': ...}
  opt_state: Any
  rng: jax.Array  # the run's base key (raw uint32 key data)


def make_optimizer(lr: float, weight_decay: float, total_steps: int):
  """AdamW at `lr` decayed by poly(0.9) to 0 over `total_steps`; decay on matrices only."""
  schedule = optax.polynomial_schedule(lr, 0.0, POLY_POWER, total_steps)
  return optax.adamw(schedule, weight_decay=weight_decay, mask=weight_decay_mask)


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Patch-grid logits [B, gh, gw, C] and labels int [B, H, W] -> the mean cross-entropy over
  the pixels labelled 0..C-1, logits resized bilinearly to H x W; 0 when none is labelled."""
  num_classes = logits.shape[-1]
  logits = interpolation.resize(logits, labels.shape[1:], 'bilinear', axes=(1, 2))  # [B, H, W, C]
  labelled = (labels >= 0) & (labels < num_classes) & (labels != IGNORE_LABEL)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(labelled, labels, 0))
  return jnp.sum(jnp.where(labelled, losses, 0.0)) / jnp.maximum(labelled.sum(), 1)


def create_state(
  model: SegmentationModel,
  tower_params: Any,
  optimizer: optax.GradientTransformation,
  crop_size: int,
  seed: int,
) -> FinetuneState:
  """The pre-trained tower's parameters with a freshly initialised head (seeded)."""
  init_rng, run_rng = jax.random.split(jax.random.key(seed))
  images = jnp.zeros((1, crop_size, crop_size, 3), jnp.float32)
  params = dict(jax.jit(model.init)(init_rng, images)['params'])
  if jax.tree.structure(params['tower']) != jax.tree.structure(tower_params):
    raise ValueError("the tower's parameters do not match the model built from its config")
  params['tower'] = tower_params
  return FinetuneState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.key_data(run_rng),
  )


def make_train_step(
  model: SegmentationModel, optimizer: optax.GradientTransformation
) -> Callable[[FinetuneState, jax.Array, jax.Array], tuple[FinetuneState, jax.Array]]:
  """The jitted step: (state, images uint8 [B, c, c, 3], labels int32 [B, c, c]) -> (next
  state, loss). The old state is donated."""

  def train_step(state: FinetuneState, images: jax.Array, labels: jax.Array):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    dropout, gumbel = jax.random.split(step_rng)

    def loss_fn(params):
      logits = model.apply(
        {'params': params},
        normalize_images(images),
        train=True,
        rngs={'dropout': dropout, 'gumbel': gumbel},
      )
      return pixel_cross_entropy(logits, labels)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss

  return jax.jit(train_step, donate_argnums=0)
