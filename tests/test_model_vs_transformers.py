"""GroupViT in JAX against transformers' PyTorch GroupViTModel with identical random weights.

Weights reach our model three ways: a Hugging Face directory (safetensors and
pytorch_model.bin), and an NVlabs-format .pth built from the same weights and run through the
`python -m groupvit_jax.convert` command. Each must reproduce the reference's image and text
embeddings, logits_per_image and every stage's soft and hard assignment maps to 1e-4.
"""

import numpy as np
import pytest
import torch

import groupvit_jax

import cli
import hf_reference as ref

TOL = 1e-4
TOKENS = ref.random_tokens(seed=7, n=5)


class TrainingConfig:
  """Stands in for the training config object a real NVlabs checkpoint also pickles."""

  def __init__(self):
    self.lr = 1.6e-3


def assert_matches(ours, expected):
  """ours: (ImageOutput, text embeddings, logit scale); expected: ref.outputs(...)."""
  image, text, scale = ours
  np.testing.assert_allclose(image.embedding, expected['image_embeds'], atol=TOL, rtol=0)
  np.testing.assert_allclose(text, expected['text_embeds'], atol=TOL, rtol=0)
  logits = scale * np.asarray(image.embedding) @ np.asarray(text).T
  np.testing.assert_allclose(logits, expected['logits_per_image'], atol=TOL, rtol=0)
  assert len(image.assignments) == len(expected['soft']) == len(expected['hard'])
  for stage, (assignment, soft, hard) in enumerate(
    zip(image.assignments, expected['soft'], expected['hard'])
  ):
    np.testing.assert_allclose(
      assignment.soft, soft, atol=TOL, rtol=0, err_msg=f'stage {stage} soft assignment'
    )
    assert_same_hard_assignment(np.asarray(assignment.hard), hard, soft, stage)


def assert_same_hard_assignment(ours, theirs, their_soft, stage):
  """Hard maps [B, S, N] are one-hot over groups and pick the reference's group.

  Where the reference's two best groups are within TOL of each other, float rounding decides
  argmax in either implementation, so either of the tied groups is accepted there.
  """
  assert set(np.unique(ours)) <= {0.0, 1.0}, f'stage {stage}: not one-hot'
  np.testing.assert_array_equal(ours.sum(axis=1), 1.0)
  ours_pick, their_pick = ours.argmax(axis=1), theirs.argmax(axis=1)  # [B, N]
  differ = ours_pick != their_pick
  if differ.any():
    b, n = np.nonzero(differ)
    gap = np.abs(their_soft[b, ours_pick[b, n], n] - their_soft[b, their_pick[b, n], n])
    assert gap.max() <= TOL, f'stage {stage}: {differ.sum()} tokens assigned differently'
  assert differ.mean() < 0.01, f'stage {stage}: too many near-ties to be a meaningful test'


def run_ours(model, images):
  image = model.image_outputs(images)
  # The reference's token ids, not re-tokenised; _text_fn gives the unnormalised features.
  features = np.asarray(model._text_fn(model.variables, TOKENS))
  return image, features / np.linalg.norm(features, axis=-1, keepdims=True), model.logit_scale()


def convert_cli(input_path, output_dir, *extra):
  result = cli.run('groupvit_jax.convert', '--input', input_path, '--output', output_dir, *extra)
  assert result.returncode == 0, result.stderr


def save_hf_bin(hf_model, directory):
  """A Hugging Face directory with pytorch_model.bin instead of safetensors."""
  directory.mkdir()
  hf_model.config.to_json_file(str(directory / 'config.json'))
  torch.save(hf_model.state_dict(), directory / 'pytorch_model.bin')


def save_nvlabs(hf_model, path):
  sd = ref.nvlabs_state_dict(hf_model, multi_label_logit_scale=3.1)
  torch.save({'model': sd, 'epoch': 29, 'config': TrainingConfig()}, path)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  hf_model = ref.make_model(seed=0, **ref.TINY)
  root = tmp_path_factory.mktemp('tiny')
  hf_model.save_pretrained(root / 'hf')
  save_hf_bin(hf_model, root / 'hf_bin')
  save_nvlabs(hf_model, root / 'nvlabs.pth')
  # The tiny model's 2 heads are not what width/64 gives, so the .pth needs --num_heads.
  convert_cli(root / 'nvlabs.pth', root / 'converted', '--num_heads', '2', '--text_num_heads', '2')
  return hf_model, root


@pytest.mark.parametrize('size', [(64, 64), (80, 48)])
@pytest.mark.parametrize('source', ['hf', 'hf_bin', 'converted'])
def test_tiny_model_matches_transformers(tiny, source, size):
  hf_model, root = tiny
  images = ref.random_images(seed=1, n=3, height=size[0], width=size[1])
  expected = ref.outputs(hf_model, images, TOKENS)
  assert_matches(run_ours(groupvit_jax.load(str(root / source)), images), expected)


def test_converted_checkpoint_keeps_multi_label_temperature(tiny):
  _, root = tiny
  model = groupvit_jax.load(str(root / 'converted'))
  _, multi_label = model.model.apply(model.variables, method=type(model.model).temperatures)
  np.testing.assert_allclose(multi_label, np.exp(3.1), rtol=1e-6)


@pytest.fixture(scope='module')
def groupvit_s(tmp_path_factory):
  """The released architecture (GroupViT-S, 2 stages), converted from an NVlabs .pth."""
  hf_model = ref.make_model(seed=3)
  root = tmp_path_factory.mktemp('groupvit_s')
  save_nvlabs(hf_model, root / 'nvlabs.pth')
  convert_cli(root / 'nvlabs.pth', root / 'converted')
  hf_model.save_pretrained(root / 'hf')
  return hf_model, root


# 320x256 (interpolated positions) costs 30 s at this size: the slow set runs it; the tiny
# model checks interpolation in the default set.
@pytest.mark.parametrize('size', [(224, 224), pytest.param((320, 256), marks=pytest.mark.slow)])
@pytest.mark.parametrize('source', ['converted', 'hf'])
def test_released_architecture_matches_transformers(groupvit_s, source, size):
  hf_model, root = groupvit_s
  images = ref.random_images(seed=5, n=2, height=size[0], width=size[1])
  expected = ref.outputs(hf_model, images, TOKENS)
  model = groupvit_jax.load(str(root / source))
  assert model.config['vision']['depths'] == [6, 3, 3]
  assert model.config['vision']['num_heads'] == 6
  assert_matches(run_ours(model, images), expected)
