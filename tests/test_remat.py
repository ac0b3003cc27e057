"""config.model.remat policies: the same losses and gradients, fewer saved activations.

XLA's CPU memory analysis does not show the saving: there the compiled value_and_grad of the
tiny model, and of a bare stack of transformer blocks, reports about 10% MORE temporary memory
with 'full' than with 'none', although the compiled program does recompute (it has more dot
products, e.g. 92 against 72 for four blocks). So on CPU the tests check what the policies make JAX
save for the backward pass (the residuals of jax.vjp), and the compiled temp-memory comparison
runs on accelerators only.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_train_config

from groupvit_jax.models import layers
from groupvit_jax.models.groupvit import GroupViT
from groupvit_jax.training import config_checks
from groupvit_jax.weights import checkpoint

POLICIES = list(layers.REMAT_POLICIES)


def tiny_model(remat):
  return checkpoint.build_model(dict(tiny_train_config.get_config().model.to_dict(), remat=remat))


def inputs(batch):
  size = tiny_train_config.get_config().model.vision.image_size
  images = np.random.default_rng(0).standard_normal((batch, size, size, 3), np.float32)
  tokens = np.random.default_rng(1).integers(1, 500, (batch, 1, 16), np.int32)
  return jnp.asarray(images), jnp.asarray(tokens)


def loss_function(model):
  """A CLIP loss of the training forward (Gumbel noise and drop path on, fixed keys)."""

  def loss(params, batch_stats, images, tokens):
    (image, text, (scale, _)), _ = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      images,
      tokens,
      rngs={'gumbel': jax.random.key(1), 'dropout': jax.random.key(2)},
      method=GroupViT.embed_for_training,
      mutable=['batch_stats'],
    )
    logits = scale * image @ text[:, 0].T
    diagonal = jnp.arange(logits.shape[0])
    image_to_text = jax.nn.log_softmax(logits, axis=1)[diagonal, diagonal]
    text_to_image = jax.nn.log_softmax(logits, axis=0)[diagonal, diagonal]
    return -jnp.mean(image_to_text + text_to_image) / 2

  return loss


@pytest.fixture(scope='module')
def reference():
  """The variables, a batch, and the loss and gradients without remat."""
  images, tokens = batch = inputs(4)
  model = tiny_model('none')
  variables = model.init(jax.random.key(0), images[:1], tokens[:1, 0])
  loss = jax.jit(jax.value_and_grad(loss_function(model)))
  return variables, (images, tokens), loss(variables['params'], variables['batch_stats'], *batch)


def relative_l2(a, b):
  """||a - b|| / ||b|| over whole gradient trees."""
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return math.sqrt(num / sum(float(jnp.sum(y**2)) for y in jax.tree.leaves(b)))


@pytest.mark.parametrize('policy', [p for p in POLICIES if p != 'none'])
def test_every_policy_gives_the_same_loss_and_gradients(reference, policy):
  variables, batch, (loss, grads) = reference
  model = tiny_model(policy)
  again = jax.jit(jax.value_and_grad(loss_function(model)))
  remat_loss, remat_grads = again(variables['params'], variables['batch_stats'], *batch)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  assert jax.tree.structure(remat_grads) == jax.tree.structure(grads)
  # Rematerialised blocks fuse differently, so the gradients differ by float32 rounding: about
  # 8e-7 of their norm here ('everything_saveable', which recomputes nothing, 4e-7), up to 2e-6
  # with other seeds and batches. 1e-5 is that float32 floor, not room for a mistake: other
  # Gumbel noise moves these gradients by 5e-3, other drop-path draws by more than 1.
  assert relative_l2(remat_grads, grads) < 1e-5


def residual_bytes(policy, batch):
  """Bytes JAX keeps from the forward pass for the backward pass (jax.vjp's residuals)."""
  images, tokens = inputs(batch)
  model = tiny_model(policy)
  variables = jax.eval_shape(model.init, jax.random.key(0), images[:1], tokens[:1, 0])
  loss = loss_function(model)

  def backward(params, batch_stats):
    return jax.vjp(lambda p: loss(p, batch_stats, images, tokens), params)[1]

  residuals = jax.eval_shape(backward, variables['params'], variables['batch_stats'])
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(residuals))


def test_policies_save_less_for_the_backward_pass():
  saved = {policy: residual_bytes(policy, 16) for policy in POLICIES}
  assert saved['full'] == saved['nothing_saveable']
  assert saved['full'] < saved['dots_with_no_batch_dims_saveable'] <= saved['dots_saveable']
  assert saved['dots_saveable'] < saved['none']
  assert saved['full'] < saved['none'] / 2


@pytest.mark.skipif(jax.default_backend() == 'cpu', reason="CPU's memory analysis shows no saving")
def test_full_remat_needs_less_temporary_memory():
  def temp_bytes(policy):
    images, tokens = inputs(256)
    model = tiny_model(policy)
    variables = jax.eval_shape(model.init, jax.random.key(0), images[:1], tokens[:1, 0])
    step = jax.jit(jax.value_and_grad(loss_function(model)))
    compiled = step.lower(variables['params'], variables['batch_stats'], images, tokens).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes('full') < temp_bytes('none')


@pytest.mark.parametrize('value, policy', [(False, 'none'), (True, 'full'), ('False', 'none')])
def test_bools_of_older_configs_still_work(value, policy):
  """Checkpoints' stored model configs and older user configs say remat: False or True; and
  --config.model.remat=True on the command line now gives the string 'True'."""
  assert layers.remat_policy(value) == policy
  assert layers.remat_policy(policy) == policy


@pytest.mark.parametrize('value', ['dots', 'everything', None, 1])
def test_an_unknown_policy_is_a_clear_error(value):
  with pytest.raises(ValueError, match=r'config\.model\.remat is .*; expected one of none, full'):
    layers.remat_policy(value)
  images, tokens = inputs(1)
  with pytest.raises(ValueError, match=r'config\.model\.remat'):
    tiny_model(value).init(jax.random.key(0), images, tokens[:, 0])


def test_config_check_names_the_key_and_the_choices():
  config = tiny_train_config.get_config()
  config_checks.check(config)
  config.model.remat = 'dots'
  with pytest.raises(config_checks.ConfigError, match=r"config\.model\.remat is 'dots'") as error:
    config_checks.check(config)
  assert all(policy in str(error.value) for policy in POLICIES)


def test_policies_keep_the_parameters():
  shapes = {policy: checkpoint.variable_shapes(tiny_model(policy)) for policy in ('none', 'full')}
  assert jax.tree.structure(shapes['full']) == jax.tree.structure(shapes['none'])
