"""bfloat16 compute: parameters, normalisations and the assignment softmax stay float32."""

import jax
import jax.numpy as jnp
import numpy as np

from groupvit_jax.weights import checkpoint

CONFIG = dict(
  vision=dict(
    image_size=32,
    width=32,
    depths=(1, 1, 1),
    num_heads=2,
    num_group_tokens=(8, 4, 0),
    num_output_groups=(8, 4),
  ),
  text=dict(width=32, depth=1, num_heads=2),
  embed_dim=16,
  projection_hidden_dim=64,
)


def test_bfloat16_compute_keeps_float32_where_it_matters():
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  tokens = jnp.zeros((2, 77), jnp.int32).at[:, 0].set(49406).at[:, 5].set(49407)
  f32 = checkpoint.build_model(dict(CONFIG, dtype='float32'))
  bf16 = checkpoint.build_model(dict(CONFIG, dtype='bfloat16'))
  variables = jax.jit(f32.init)(jax.random.key(1), images, tokens)

  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

  def run(model):
    return jax.jit(model.apply)(variables, images, tokens)

  (image32, text32, logits32), (image16, text16, logits16) = run(f32), run(bf16)
  for a in image16.assignments:
    assert a.soft.dtype == a.hard.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a.soft).sum(axis=1), 1.0, rtol=1e-6)
  assert image16.embedding.dtype == text16.dtype == logits16.dtype == jnp.float32
  # Same model, coarser arithmetic: embeddings point the same way.
  cosine = np.sum(np.asarray(image16.embedding) * np.asarray(image32.embedding), axis=-1)
  assert cosine.min() > 0.98, cosine
  cosine = np.sum(np.asarray(text16) * np.asarray(text32), axis=-1)
  assert cosine.min() > 0.98, cosine
  np.testing.assert_allclose(logits16, logits32, atol=0.5)  # scale 14.3 x cosines
