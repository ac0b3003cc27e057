"""The released recipe's optimizer: AdamW, warm-up then cosine per step, global-norm clipping."""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(
  lr: float, warmup_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> optax.Schedule:
  """Linear warm-up from `warmup_lr` to `lr` over `warmup_steps`, then cosine to `min_lr`.

  The value at step t is the rate used for the update that produces step t + 1.
  """
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f'warmup_steps ({warmup_steps}) must be in [0, total_steps={total_steps})')

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = warmup_lr + (lr - warmup_lr) * step / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    cosine = min_lr + 0.5 * (lr - min_lr) * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup_steps, warm, cosine)

  return schedule


def weight_decay_mask(params: Any) -> Any:
  """True where weight decay applies: matrices and kernels, not biases or other 1-D params.

  As in the released code, which skips decay for every parameter with one dimension (biases,
  LayerNorm and BatchNorm scales) and for scalars (the temperatures).
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def schedule_from_config(config: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """learning_rate_schedule from `config.optimizer` fields (lr, warmup_lr, min_lr, warmup_steps)."""
  return learning_rate_schedule(
    config['lr'], config['warmup_lr'], config['min_lr'], config['warmup_steps'], total_steps
  )


def make_optimizer(config: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
  """AdamW with the recipe's schedule and clipping, from `config.optimizer` fields.

  Fields: lr, warmup_lr, min_lr, warmup_steps, weight_decay, b1, b2, eps, grad_clip_norm and
  grad_accum_steps (updates applied every that many micro-steps, gradients averaged).
  """
  schedule = schedule_from_config(config, total_steps)
  optimizer = optax.chain(
    optax.clip_by_global_norm(config['grad_clip_norm']),
    optax.adamw(
      schedule,
      b1=config['b1'],
      b2=config['b2'],
      eps=config['eps'],
      weight_decay=config['weight_decay'],
      mask=weight_decay_mask,
    ),
  )
  accum = config.get('grad_accum_steps', 1)
  if accum > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=accum)
  return optimizer
