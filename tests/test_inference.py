"""The inference API contract: inputs, outputs, validation and compilation caching."""

import numpy as np
import pytest
import torch

import groupvit_jax

import hf_reference as ref


@pytest.fixture(scope='module')
def model(tmp_path_factory):
  hf_model = ref.make_model(seed=0, **ref.TINY)
  directory = tmp_path_factory.mktemp('hf')
  hf_model.save_pretrained(directory)
  return groupvit_jax.load(str(directory))


def test_encode_image_returns_unit_float32_embeddings(model):
  images = ref.random_images(seed=0, n=3, height=48, width=80)
  embeddings = model.encode_image(images)
  assert embeddings.shape == (3, 32) and embeddings.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-5)
  # One image [H, W, 3] is a batch of one.
  np.testing.assert_allclose(model.encode_image(images[0]), embeddings[:1], atol=1e-6)


def test_encode_text_matches_transformers_with_our_tokenizer(tmp_path):
  hf_model = ref.make_model(seed=1, **ref.TINY)
  hf_model.save_pretrained(tmp_path)
  texts = ['a photo of a cat.', 'Zoë’s café &amp; bar 🐶', '']
  ours = groupvit_jax.load(str(tmp_path)).encode_text(texts)
  tokens = torch.from_numpy(groupvit_jax.tokenize(texts).astype(np.int64))
  with torch.no_grad():
    expected = hf_model.get_text_features(input_ids=tokens).pooler_output
  expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
  assert ours.shape == (3, 32) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_image_features_are_the_pooled_features_before_projection(tmp_path):
  hf_model = ref.make_model(seed=1, **ref.TINY)
  hf_model.save_pretrained(tmp_path)
  images = ref.random_images(seed=2, n=3, height=64, width=64)
  ours = groupvit_jax.load(str(tmp_path)).image_features(images)
  with torch.no_grad():
    expected = hf_model.vision_model(pixel_values=ref.pixel_values(images)).pooler_output.numpy()
  assert ours.shape == (3, 64) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_repeated_shapes_do_not_recompile(model):
  images = ref.random_images(seed=1, n=2, height=64, width=64)
  before = model._image_fn._cache_size()
  model.encode_image(images)
  model.encode_image(images + 1)
  assert model._image_fn._cache_size() == before + 1
  model.encode_image(ref.random_images(seed=1, n=2, height=64, width=96))
  assert model._image_fn._cache_size() == before + 2
  text_before = model._text_fn._cache_size()
  model.encode_text(['one', 'two'])
  model.encode_text(['three', 'four'])
  assert model._text_fn._cache_size() == text_before + 1


@pytest.mark.parametrize(
  'images, error, message',
  [
    (np.zeros((2, 64, 64, 3), np.float32), TypeError, 'uint8'),
    (np.zeros((2, 64, 64), np.uint8), ValueError, r'\[N, H, W, 3\]'),
    (np.zeros((2, 3, 64, 64), np.uint8), ValueError, r'\[N, H, W, 3\]'),
    (np.zeros((1, 8, 8, 3), np.uint8), ValueError, 'smaller than one 16x16 patch'),
  ],
)
def test_bad_images_are_rejected_clearly(model, images, error, message):
  with pytest.raises(error, match=message):
    model.encode_image(images)


def test_load_missing_path():
  with pytest.raises(FileNotFoundError, match='does not exist'):
    groupvit_jax.load('/nonexistent/checkpoint')


def test_bfloat16_compute_on_request(model, tmp_path):
  hf_model = ref.make_model(seed=0, **ref.TINY)
  hf_model.save_pretrained(tmp_path)
  bf16 = groupvit_jax.load(str(tmp_path), dtype='bfloat16')
  images = ref.random_images(seed=2, n=2, height=64, width=64)
  ours, full = bf16.encode_image(images), model.encode_image(images)
  assert ours.dtype == np.float32
  assert np.sum(ours * full, axis=-1).min() > 0.98
  with pytest.raises(ValueError, match='dtype'):
    groupvit_jax.load(str(tmp_path), dtype='float16')
