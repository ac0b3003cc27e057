"""The grouping block's assignment: straight-through Gumbel-softmax and its modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from groupvit_jax.models import grouping


def test_straight_through_forward_is_exactly_one_hot():
  logits = jax.random.normal(jax.random.key(0), (4, 16, 50)) * 3
  soft = jax.nn.softmax(logits, axis=1)
  hard = np.asarray(grouping.straight_through_one_hot(soft, axis=1))
  expected = np.eye(16, dtype=np.float32)[np.asarray(soft).argmax(axis=1)]  # [4, 50, 16]
  np.testing.assert_array_equal(hard, expected.transpose(0, 2, 1))  # bit-exact 0s and 1s


def test_straight_through_gradient_is_the_soft_gradient():
  logits = jax.random.normal(jax.random.key(1), (2, 8, 30))
  weights = jax.random.normal(jax.random.key(2), (2, 8, 30))
  rng = jax.random.key(3)

  def loss(x, hard):
    return jnp.sum(weights * grouping.gumbel_softmax(x, rng, axis=1, hard=hard) ** 2)

  grad_hard = jax.grad(loss)(logits, True)
  grad_soft_path = jax.grad(
    lambda x: jnp.sum(
      weights
      * 2
      * jax.lax.stop_gradient(grouping.gumbel_softmax(x, rng, 1, hard=True))
      * grouping.gumbel_softmax(x, rng, 1, hard=False)
    )
  )(logits)
  # d/dx sum(w * h^2) with h = hard + (soft - sg(soft)) is sum(w * 2h * dsoft/dx).
  np.testing.assert_allclose(grad_hard, grad_soft_path, rtol=1e-6, atol=1e-7)
  assert np.abs(grad_hard).max() > 0


def test_straight_through_gradient_equals_soft_gumbel_gradient_for_linear_loss():
  logits = jax.random.normal(jax.random.key(4), (3, 5, 7))
  weights = jax.random.normal(jax.random.key(5), (3, 5, 7))
  rng = jax.random.key(6)
  grads = [
    jax.grad(lambda x: jnp.sum(weights * grouping.gumbel_softmax(x, rng, 1, hard=h)))(logits)
    for h in (True, False)
  ]
  np.testing.assert_array_equal(grads[0], grads[1])


def test_gumbel_softmax_matches_numpy_formula():
  logits = np.random.default_rng(0).normal(size=(2, 6, 9)).astype(np.float32)
  rng = jax.random.key(7)
  noise = np.asarray(jax.random.gumbel(rng, logits.shape, jnp.float32))
  tau = 0.5
  z = (logits + noise) / tau
  soft = np.exp(z - z.max(axis=1, keepdims=True))
  soft /= soft.sum(axis=1, keepdims=True)
  ours = grouping.gumbel_softmax(jnp.asarray(logits), rng, axis=1, tau=tau, hard=False)
  np.testing.assert_allclose(ours, soft, rtol=1e-5, atol=1e-6)
  hard = grouping.gumbel_softmax(jnp.asarray(logits), rng, axis=1, tau=tau, hard=True)
  np.testing.assert_array_equal(np.asarray(hard).argmax(axis=1), soft.argmax(axis=1))


def numpy_assign_attention(params, groups, tokens, assign_eps=1.0, assign_scale=1.0):
  """Eval-mode assignment attention from the paper's equations, in NumPy."""

  def lin(p, x):
    return x @ np.asarray(p['kernel']) + np.asarray(p['bias'])

  q, k, v = (
    lin(params['q_proj'], groups),
    lin(params['k_proj'], tokens),
    lin(params['v_proj'], tokens),
  )
  logits = assign_scale * q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])  # [B, S, N]
  soft = np.exp(logits - logits.max(axis=1, keepdims=True))
  soft /= soft.sum(axis=1, keepdims=True)  # over groups
  hard = (soft == soft.max(axis=1, keepdims=True)).astype(np.float32)
  out = (hard / (hard.sum(axis=-1, keepdims=True) + assign_eps)) @ v
  return lin(params['proj'], out), hard, soft


@pytest.mark.parametrize('assign_scale', [1.0, 10.0])
def test_assign_attention_matches_numpy(assign_scale):
  groups = np.random.default_rng(1).normal(size=(2, 4, 16)).astype(np.float32)
  tokens = np.random.default_rng(2).normal(size=(2, 25, 16)).astype(np.float32)
  module = grouping.AssignAttention(assign_scale=assign_scale)
  variables = module.init(jax.random.key(0), groups, tokens)
  out, assignment = module.apply(variables, groups, tokens)
  ref_out, ref_hard, ref_soft = numpy_assign_attention(
    variables['params'], groups, tokens, assign_scale=assign_scale
  )
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(assignment.hard, ref_hard)
  np.testing.assert_allclose(assignment.soft, ref_soft, rtol=1e-5, atol=1e-6)


@pytest.fixture
def block_inputs():
  tokens = jax.random.normal(jax.random.key(10), (2, 36, 32))
  group_tokens = jax.random.normal(jax.random.key(11), (2, 6, 32))
  return tokens, group_tokens


def test_training_adds_gumbel_noise_and_stays_one_hot(block_inputs):
  block = grouping.GroupingBlock(num_output_groups=6, num_heads=2)
  variables = jax.jit(block.init)(jax.random.key(0), *block_inputs)
  apply = jax.jit(block.apply, static_argnames='deterministic')
  _, eval_assign = apply(variables, *block_inputs)

  def train(seed):
    return apply(
      variables, *block_inputs, deterministic=False, rngs={'gumbel': jax.random.key(seed)}
    )[1]

  a, b, again = train(1), train(2), train(1)
  for assignment in (eval_assign, a, b):
    np.testing.assert_array_equal(np.asarray(assignment.hard).sum(axis=1), 1.0)
  np.testing.assert_array_equal(a.hard, again.hard)  # deterministic for an rng
  assert not np.array_equal(a.hard, b.hard)  # the noise changes assignments
  np.testing.assert_array_equal(a.soft, eval_assign.soft)  # soft maps carry no noise


def test_soft_assignment_mode_uses_the_softmax(block_inputs):
  block = grouping.GroupingBlock(num_output_groups=6, num_heads=2, hard=False, gumbel=False)
  variables = block.init(jax.random.key(0), *block_inputs)
  _, assignment = block.apply(variables, *block_inputs, deterministic=False)
  np.testing.assert_array_equal(assignment.hard, assignment.soft)
  assert np.asarray(assignment.hard).max() < 1.0


def test_gradient_reaches_assignment_projections_through_hard_assignment(block_inputs):
  block = grouping.GroupingBlock(num_output_groups=6, num_heads=2)
  variables = block.init(jax.random.key(0), *block_inputs)

  def loss(params):
    out, _ = block.apply(
      {'params': params}, *block_inputs, deterministic=False, rngs={'gumbel': jax.random.key(3)}
    )
    return jnp.sum(out**2)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  # q and k only influence the output through the assignment: a zero gradient would mean
  # the straight-through estimator is cut.
  assert np.abs(grads['assign']['q_proj']['kernel']).max() > 0
  assert np.abs(grads['assign']['k_proj']['kernel']).max() > 0
