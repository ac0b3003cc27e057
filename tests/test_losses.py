"""The training losses against NumPy references, closed forms and their sharded form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from groupvit_jax.training import losses


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _embeddings(seed, batch, k, dim):
  """Random L2-normalised image [B, E], text [B, E] and prompts [B, K, E]."""
  rng = np.random.default_rng(seed)
  return (
    _unit(rng.normal(size=(batch, dim))),
    _unit(rng.normal(size=(batch, dim))),
    _unit(rng.normal(size=(batch, k, dim))),
  )


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _reference(image, text, prompts, scale, multi_label_scale):
  """The formulas in float64 over the whole batch, with explicit targets."""
  image, text, prompts = (np.asarray(a, np.float64) for a in (image, text, prompts))
  batch, k, dim = prompts.shape

  log_p_i2t = _log_softmax(scale * image @ text.T)  # [B, B]
  log_p_t2i = _log_softmax(scale * text @ image.T)  # [B, B]
  i2t = -np.mean([log_p_i2t[i, i] for i in range(batch)])
  t2i = -np.mean([log_p_t2i[i, i] for i in range(batch)])
  image_text = 0.5 * (i2t + t2i)

  flat = prompts.reshape(batch * k, dim)  # row i*K + j is prompt j of image i
  soft_targets = np.zeros((batch, batch * k))
  for i in range(batch):
    soft_targets[i, i * k : (i + 1) * k] = 1 / k
  image_side = np.mean(-(soft_targets * _log_softmax(multi_label_scale * image @ flat.T)).sum(-1))
  log_p_prompt = _log_softmax(multi_label_scale * flat @ image.T)  # [B*K, B]
  text_side = -np.mean([log_p_prompt[r, r // k] for r in range(batch * k)])
  multi_label = 0.5 * (image_side + text_side)
  return {
    'loss': image_text + multi_label,
    'loss_image_text': image_text,
    'loss_multi_label': multi_label,
  }


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('scales', [(1.0, 1.0), (1 / 0.07, 5.0), (100.0, 100.0)])
def test_matches_numpy_reference(seed, scales):
  image, text, prompts = _embeddings(seed, batch=8, k=3, dim=16)
  got = losses.contrastive_losses(image, text, prompts, *scales)
  expected = _reference(image, text, prompts, *scales)
  for name, value in expected.items():
    assert got[name].dtype == jnp.float32 and got[name].shape == ()
    np.testing.assert_allclose(got[name], value, rtol=1e-6, err_msg=name)


def test_closed_form_with_orthogonal_embeddings():
  e = np.eye(4, dtype=np.float32)
  s, m = 3.0, 5.0
  # K=1: image i == prompt i, text 0 == image 0, text 1 orthogonal to both images.
  one = losses.contrastive_losses(e[[0, 1]], e[[0, 2]], e[[0, 1]][:, None], s, m)
  # Matched pairs score [s, 0] (loss log(1 + e^-s)), text 1 scores [0, 0] (loss log 2).
  np.testing.assert_allclose(
    one['loss_image_text'], 0.5 * (np.log1p(np.exp(-s)) + np.log(2)), rtol=1e-6
  )
  np.testing.assert_allclose(one['loss_multi_label'], np.log1p(np.exp(-m)), rtol=1e-6)

  # K=2: image i's prompts are [e_i, e_{i+2}]; each image scores [m, 0, 0, 0] against the
  # four prompts with 1/2 on its own two: log(e^m + 3) - m/2. Prompts e_i score [m, 0] and
  # e_{i+2} score [0, 0] against the images.
  two = losses.multi_label_loss(e[[0, 1]], e[[[0, 2], [1, 3]]], m)
  image_side = np.log(np.exp(m) + 3) - m / 2
  text_side = 0.5 * (np.log1p(np.exp(-m)) + np.log(2))
  np.testing.assert_allclose(two, 0.5 * (image_side + text_side), rtol=1e-6)


def test_one_prompt_per_image_is_image_text_infonce():
  image, text, _ = _embeddings(3, batch=8, k=1, dim=16)
  np.testing.assert_allclose(
    losses.multi_label_loss(image, text[:, None], 7.0),
    losses.image_text_loss(image, text, 7.0),
    rtol=1e-6,
  )


def test_matched_pairs_loss_decreases_with_scale():
  image, _, _ = _embeddings(4, batch=8, k=1, dim=16)
  # Each image is its own caption and its one prompt: the targets are the largest logits.
  totals = [
    losses.contrastive_losses(image, image, image[:, None], s, s)['loss'] for s in (1, 3, 10, 30)
  ]
  assert np.all(np.diff(totals) < 0) and totals[-1] < 0.01, totals


def test_bfloat16_inputs_are_computed_in_float32():
  image, text, prompts = (jnp.asarray(a, jnp.bfloat16) for a in _embeddings(5, 8, 3, 16))
  got = losses.contrastive_losses(image, text, prompts, 10.0, 10.0)
  as_f32 = [np.asarray(a, np.float32) for a in (image, text, prompts)]
  assert got['loss'].dtype == jnp.float32
  np.testing.assert_allclose(got['loss'], _reference(*as_f32, 10.0, 10.0)['loss'], rtol=1e-6)


# Sharded: local batch 2 on each of 8 devices, so B = 16, B*K = 48, E = 24 are all distinct.
LOCAL, K, DIM = 2, 3, 24
MESHES = {
  'data8': ((8,), ('data',), 'data'),
  'data4_fsdp2': ((4, 2), ('data', 'fsdp'), ('data', 'fsdp')),
  # Gathering in the other axis order permutes the global batch, which the loss ignores.
  'data4_fsdp2_reversed': ((4, 2), ('data', 'fsdp'), ('fsdp', 'data')),
}


def _sharded(mesh_name):
  """contrastive_losses in shard_map with the batch split over the mesh's axes."""
  if len(jax.devices('cpu')) < 8:
    pytest.skip('needs 8 CPU devices (tests/conftest.py sets XLA_FLAGS)')
  shape, names, axis_name = MESHES[mesh_name]
  mesh = Mesh(np.array(jax.devices('cpu')[:8]).reshape(shape), names)
  batch = P(names)  # batch dimension split over all mesh axes, row-major

  def local(image, text, prompts, scale, multi_label_scale):
    return losses.contrastive_losses(image, text, prompts, scale, multi_label_scale, axis_name)

  return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, batch, P(), P()), out_specs=P())


def _losses_and_grads(fn, args):
  """fn's loss dict and the gradients of its 'loss' w.r.t. all five arguments.

  Jitted: outside jit, shard_map runs op by op on every device, tens of seconds here.
  """

  def total(*a):
    out = fn(*a)
    return out['loss'], out

  (_, out), grads = jax.jit(jax.value_and_grad(total, tuple(range(5)), has_aux=True))(*args)
  return out, grads


def _args(seed):
  image, text, prompts = _embeddings(seed, batch=8 * LOCAL, k=K, dim=DIM)
  return image, text, prompts, jnp.float32(1 / 0.07), jnp.float32(20.0)


@pytest.fixture(scope='module')
def single_device():
  """Arguments, and the single-device losses and gradients on the whole batch."""
  args = _args(seed=6)
  return args, *_losses_and_grads(losses.contrastive_losses, args)


@pytest.mark.parametrize('mesh_name', MESHES)
def test_sharded_losses_and_gradients_match_single_device(mesh_name, single_device):
  args, expected, expected_grads = single_device
  got, grads = _losses_and_grads(_sharded(mesh_name), args)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, err_msg=name)
  # Gradients w.r.t. image, text, prompts and both scales.
  for i, (g, e) in enumerate(zip(grads, expected_grads)):
    assert g.shape == e.shape
    # Relative to the gradient's size: entries can be arbitrarily close to zero.
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), err_msg=f'arg {i}')


def _dot_output_shapes(jaxpr):
  """Output shapes of every dot_general in a jaxpr, including nested (jit, shard_map) ones."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      yield eqn.outvars[0].aval.shape
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, 'eqns'):
          yield from _dot_output_shapes(sub)


def test_sharded_logits_are_local_rows_by_global_columns():
  sharded = _sharded('data4_fsdp2')
  args = _args(seed=7)
  total = 8 * LOCAL
  forward = set(_dot_output_shapes(jax.make_jaxpr(sharded)(*args).jaxpr))
  # image->text and text->image [b, B], image->prompts [b, B*K], prompts->image [b*K, B].
  assert forward == {(LOCAL, total), (LOCAL, total * K), (LOCAL * K, total)}

  backward = jax.make_jaxpr(jax.grad(lambda *a: sharded(*a)['loss'], (0, 1, 2, 3, 4)))(*args)
  global_sizes = {total, total * K}
  for shape in _dot_output_shapes(backward.jaxpr):
    assert sum(d in global_sizes for d in shape) < 2, f'a global-by-global product {shape}'


def _no_prompts(batch, dim=16):
  """[B, 0, E]: no prompted texts (config.data.num_prompts = 0)."""
  return np.zeros((batch, 0, dim), np.float32)


def test_without_prompts_the_loss_is_the_image_text_loss_alone():
  # The orthogonal case above: matched pairs score [s, 0], text 1 scores [0, 0].
  e = np.eye(4, dtype=np.float32)
  s = 3.0
  got = losses.contrastive_losses(e[[0, 1]], e[[0, 2]], _no_prompts(2, 4), s, 5.0)
  assert set(got) == {'loss', 'loss_image_text'}
  np.testing.assert_allclose(got['loss'], 0.5 * (np.log1p(np.exp(-s)) + np.log(2)), rtol=1e-6)

  image, text, one_prompt = _embeddings(8, batch=8, k=1, dim=16)
  got = losses.contrastive_losses(image, text, _no_prompts(8), 7.0, 3.0)
  expected = _reference(image, text, one_prompt, 7.0, 3.0)['loss_image_text']
  np.testing.assert_allclose(got['loss'], expected, rtol=1e-6)
  np.testing.assert_allclose(got['loss_image_text'], expected, rtol=1e-6)


def test_the_multi_label_loss_needs_a_prompt():
  image, _, _ = _embeddings(9, batch=4, k=1, dim=16)
  with pytest.raises(ValueError, match='at least one prompt'):
    losses.multi_label_loss(image, _no_prompts(4), 1.0)


def test_sharded_loss_without_prompts_matches_single_device():
  image, text, _ = _embeddings(10, batch=8 * LOCAL, k=1, dim=DIM)
  args = image, text, _no_prompts(8 * LOCAL, DIM), jnp.float32(1 / 0.07), jnp.float32(20.0)
  expected, expected_grads = _losses_and_grads(losses.contrastive_losses, args)
  got, grads = _losses_and_grads(_sharded('data8'), args)
  assert set(got) == {'loss', 'loss_image_text'}
  np.testing.assert_allclose(got['loss'], expected['loss'], rtol=1e-5)
  for i in (0, 1, 3):  # image, text and the image-text scale
    g, e = grads[i], expected_grads[i]
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), err_msg=f'arg {i}')
  assert grads[4] == 0  # the multi-label temperature takes no part
