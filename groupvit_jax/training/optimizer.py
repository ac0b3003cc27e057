"""The released recipe's optimizer: AdamW, warm-up then cosine per step, global-norm clipping,
rates scaled linearly with the global batch."""

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


# The released recipe's rates are for this global batch (batch per GPU x GPUs x accumulation).
REFERENCE_BATCH = 4096


def lr_scale(config: Mapping[str, Any], batch_size: int) -> float:
  """batch_size x grad_accum_steps / 4096 when `config.scale_lr_with_batch`, else 1.

  The released main_group_vit.py scales the peak, warm-up and minimum rates linearly so; at
  the released batch (4096, no accumulation) the factor is 1.
  """
  if not config.get('scale_lr_with_batch', False):
    return 1.0
  return batch_size * (config.get('grad_accum_steps') or 1) / REFERENCE_BATCH


def scaled_rates(config: Mapping[str, Any], batch_size: int) -> dict[str, float]:
  """The rates the run uses: `config`'s lr, warmup_lr and min_lr times lr_scale."""
  scale = lr_scale(config, batch_size)
  return {key: config[key] * scale for key in ('lr', 'warmup_lr', 'min_lr')}


def describe_rates(config: Mapping[str, Any], batch_size: int) -> str:
  """One log line: the learning rates the run uses, and why."""
  rates = scaled_rates(config, batch_size)
  text = (
    f'learning rates: peak {rates["lr"]:.4g}, warm-up from {rates["warmup_lr"]:.4g}, '
    f'minimum {rates["min_lr"]:.4g}'
  )
  if not config.get('scale_lr_with_batch', False):
    return text + ' (as configured; optimizer.scale_lr_with_batch is off)'
  accum = config.get('grad_accum_steps') or 1
  batch = f'{batch_size:,}' + (f' x {accum} accumulated' if accum > 1 else '')
  return text + (
    f" (the config's x {lr_scale(config, batch_size):.4g} = global batch {batch} / "
    f'{REFERENCE_BATCH:,}; optimizer.scale_lr_with_batch)'
  )


def schedule_from_config(
  config: Mapping[str, Any], *, batch_size: int, warmup_steps: int, total_steps: int
) -> optax.Schedule:
  """learning_rate_schedule of `config.optimizer`'s rates (scaled_rates for `batch_size`).

  `warmup_steps` and `total_steps` count optimizer updates (training/steps.py derives them).
  """
  rates = scaled_rates(config, batch_size)
  return learning_rate_schedule(
    rates['lr'], rates['warmup_lr'], rates['min_lr'], warmup_steps, total_steps
  )


def make_optimizer(
  config: Mapping[str, Any], schedule: optax.Schedule
) -> optax.GradientTransformation:
  """AdamW with `schedule` (schedule_from_config's) and the recipe's clipping, from
  `config.optimizer` fields: weight_decay, b1, b2, eps, grad_clip_norm and grad_accum_steps
  (updates applied every that many micro-steps, gradients averaged)."""
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
