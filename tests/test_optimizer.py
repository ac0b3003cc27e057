"""The released recipe's schedule, weight-decay mask and clipping."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cc_yfcc_2stage
from groupvit_jax.training import optimizer

# The released recipe at its batch (rates unscaled), with a warm-up short enough for these tests.
RECIPE = cc_yfcc_2stage.get_config().optimizer.to_dict()
SCHEDULE = dict(batch_size=4096, warmup_steps=10, total_steps=100)


def _optimizer(config, **schedule):
  """make_optimizer with schedule_from_config's schedule (SCHEDULE's settings, overridden)."""
  return optimizer.make_optimizer(
    config, optimizer.schedule_from_config(config, **dict(SCHEDULE, **schedule))
  )


def test_schedule_warmup_then_cosine_by_hand():
  schedule = optimizer.learning_rate_schedule(1.6e-3, 4e-6, 4e-5, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose(schedule(0), 4e-6, rtol=1e-6)
  np.testing.assert_allclose(schedule(5), 4e-6 + 0.5 * (1.6e-3 - 4e-6), rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.6e-3, rtol=1e-6)
  # Halfway through the cosine: the mean of peak and floor.
  np.testing.assert_allclose(schedule(60), (1.6e-3 + 4e-5) / 2, rtol=1e-6)
  quarter = 4e-5 + 0.5 * (1.6e-3 - 4e-5) * (1 + math.cos(math.pi * 0.25))
  np.testing.assert_allclose(schedule(35), quarter, rtol=1e-6)
  np.testing.assert_allclose(schedule(110), 4e-5, rtol=1e-6)
  np.testing.assert_allclose(schedule(500), 4e-5, rtol=1e-6)


def test_schedule_rejects_warmup_longer_than_training():
  with pytest.raises(ValueError, match='warmup_steps'):
    optimizer.learning_rate_schedule(1e-3, 0, 0, warmup_steps=100, total_steps=100)


def test_no_weight_decay_on_biases_scales_and_temperatures():
  params = {
    'dense': {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones(4)},
    'norm': {'scale': jnp.ones(4)},
    'logit_scale': jnp.ones(()),
    'patch': {'kernel': jnp.ones((2, 2, 3, 4))},
  }
  mask = optimizer.weight_decay_mask(params)
  assert mask == {
    'dense': {'kernel': True, 'bias': False},
    'norm': {'scale': False},
    'logit_scale': False,
    'patch': {'kernel': True},
  }

  # With zero gradients only decay moves parameters: kernels shrink, the rest stays.
  opt = _optimizer(dict(RECIPE, warmup_lr=1e-2, lr=1e-2), warmup_steps=0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new['dense']['kernel'], 1 - 1e-2 * 0.05, rtol=1e-6)
  np.testing.assert_array_equal(new['dense']['bias'], 1.0)
  np.testing.assert_array_equal(new['logit_scale'], 1.0)


def test_gradients_clipped_to_global_norm_5():
  opt = _optimizer(dict(RECIPE, weight_decay=0.0))
  params = {'w': jnp.zeros((2, 2))}
  grads = {'w': jnp.full((2, 2), 10.0)}  # global norm 20
  state = opt.init(params)
  clip_state = state[0]
  clipped, _ = optax.clip_by_global_norm(5.0).update(grads, clip_state)
  np.testing.assert_allclose(optax.global_norm(clipped), 5.0, rtol=1e-6)


def test_gradient_accumulation_averages_micro_batches():
  config = dict(RECIPE, weight_decay=0.0, grad_accum_steps=2, scale_lr_with_batch=False)
  accumulated = _optimizer(config, warmup_steps=0)
  single = _optimizer(dict(config, grad_accum_steps=1), warmup_steps=0)
  params = {'w': jnp.ones(3)}
  g1, g2 = {'w': jnp.array([1.0, 2.0, 3.0])}, {'w': jnp.array([3.0, 0.0, -1.0])}
  state = accumulated.init(params)
  u1, state = accumulated.update(g1, state, params)
  np.testing.assert_array_equal(u1['w'], 0.0)  # no update after the first micro-batch
  u2, _ = accumulated.update(g2, state, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = single.update(mean, single.init(params), params)
  np.testing.assert_allclose(u2['w'], expected['w'], rtol=1e-6)


def test_rates_scale_linearly_with_the_global_batch_as_released():
  """main_group_vit.py: lr, warmup_lr and min_lr x batch x accumulation / 4096."""
  released = {k: RECIPE[k] for k in ('lr', 'warmup_lr', 'min_lr')}
  assert optimizer.scaled_rates(RECIPE, 4096) == released
  for batch, accum, scale in ((1024, 1, 0.25), (8192, 1, 2.0), (1024, 4, 1.0), (512, 2, 0.25)):
    rates = optimizer.scaled_rates(dict(RECIPE, grad_accum_steps=accum), batch)
    assert rates == pytest.approx({k: v * scale for k, v in released.items()}, rel=1e-12)
  assert optimizer.scaled_rates(dict(RECIPE, scale_lr_with_batch=False), 1024) == released
  assert (
    optimizer.scaled_rates({k: v for k, v in RECIPE.items() if k != 'scale_lr_with_batch'}, 1024)
    == released
  )

  # The schedule and the optimizer use the scaled rates: a quarter of the recipe at batch 1024.
  schedule = optimizer.schedule_from_config(RECIPE, **dict(SCHEDULE, batch_size=1024))
  np.testing.assert_allclose(schedule(0), 4e-6 / 4, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.6e-3 / 4, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), 4e-5 / 4, rtol=1e-6)
  line = optimizer.describe_rates(RECIPE, 1024)
  assert line == (
    "learning rates: peak 0.0004, warm-up from 1e-06, minimum 1e-05 (the config's x 0.25 = "
    'global batch 1,024 / 4,096; optimizer.scale_lr_with_batch)'
  )
