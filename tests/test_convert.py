"""The converter stops with a clear message, a non-zero exit code and nothing written."""

import json
import os

import numpy as np
import pytest
import torch

import cli
import hf_reference as ref


@pytest.fixture(scope='module')
def nvlabs_pth(tmp_path_factory):
  """A valid NVlabs-format checkpoint of the tiny test model, and its state dict."""
  hf_model = ref.make_model(seed=0, **ref.TINY)
  sd = ref.nvlabs_state_dict(hf_model, multi_label_logit_scale=2.5)
  path = tmp_path_factory.mktemp('nvlabs') / 'tiny.pth'
  torch.save({'model': sd}, path)
  return path, sd


def convert(tmp_path, input_path, *extra):
  out = tmp_path / 'out'
  result = cli.run(
    'groupvit_jax.convert',
    '--input',
    input_path,
    '--output',
    out,
    '--num_heads',
    '2',
    '--text_num_heads',
    '2',
    *extra,
  )
  return result, out


def assert_failed_cleanly(result, out, *fragments):
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr
  assert not out.exists()
  assert not [p for p in os.listdir(out.parent) if '.tmp-' in p], 'temporary files left behind'


def test_missing_input(tmp_path):
  result, out = convert(tmp_path, tmp_path / 'nope.pth')
  assert_failed_cleanly(result, out, 'nope.pth', 'does not exist')


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / 'notes.pth'
  path.write_text('these are not weights\n' * 100)
  result, out = convert(tmp_path, path)
  assert_failed_cleanly(result, out, 'not a readable PyTorch checkpoint')


def test_truncated_checkpoint(tmp_path, nvlabs_pth):
  data = nvlabs_pth[0].read_bytes()
  path = tmp_path / 'truncated.pth'
  path.write_bytes(data[: len(data) // 2])
  result, out = convert(tmp_path, path)
  assert_failed_cleanly(result, out, 'truncated or corrupt')


def test_unknown_missing_and_misshaped_keys_are_all_listed(tmp_path, nvlabs_pth):
  sd = dict(nvlabs_pth[1])
  sd['img_encoder.extra_head.weight'] = torch.zeros(3, 3)
  del sd['text_encoder.ln_final.bias']
  sd['img_encoder.norm.weight'] = torch.zeros(65)
  path = tmp_path / 'edited.pth'
  torch.save({'model': sd}, path)
  result, out = convert(tmp_path, path)
  assert_failed_cleanly(
    result,
    out,
    '1 unknown key(s): img_encoder.extra_head.weight',
    '1 missing parameter(s): params/text_encoder/ln_final/bias',
    '1 mis-shaped key(s): img_encoder.norm.weight: (65,)',
  )


def test_not_groupvit_at_all(tmp_path):
  path = tmp_path / 'resnet.pth'
  torch.save({'model': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, path)
  result, out = convert(tmp_path, path)
  assert_failed_cleanly(result, out, 'not a GroupViT state dict')


def test_hf_directory_without_weights(tmp_path):
  directory = tmp_path / 'hf'
  directory.mkdir()
  (directory / 'config.json').write_text(json.dumps({'model_type': 'groupvit'}))
  result, out = convert(tmp_path, directory)
  assert_failed_cleanly(result, out, 'neither model.safetensors nor pytorch_model.bin')


def test_corrupt_safetensors(tmp_path):
  directory = tmp_path / 'hf'
  directory.mkdir()
  (directory / 'config.json').write_text(json.dumps({'model_type': 'groupvit'}))
  (directory / 'model.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
  result, out = convert(tmp_path, directory)
  assert_failed_cleanly(result, out, 'not a readable safetensors file')


def test_existing_output_is_kept_unless_overwrite(tmp_path, nvlabs_pth):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'precious.txt').write_text('keep me')
  result, _ = convert(tmp_path, nvlabs_pth[0])
  assert result.returncode != 0 and 'already exists' in result.stderr
  assert (out / 'precious.txt').read_text() == 'keep me'
  result, _ = convert(tmp_path, nvlabs_pth[0], '--overwrite')
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(out)) == ['config.json', 'variables']


def test_ddp_prefixed_keys_and_success_summary(tmp_path, nvlabs_pth):
  path = tmp_path / 'ddp.pth'
  torch.save({'model': {f'module.{k}': v for k, v in nvlabs_pth[1].items()}}, path)
  result, out = convert(tmp_path, path)
  assert result.returncode == 0, result.stderr
  assert 'depths [2, 1, 1]' in result.stdout
  config = json.loads((out / 'config.json').read_text())
  assert config['model']['vision']['num_group_tokens'] == [8, 4, 0]
  assert config['source']['format'] == 'nvlabs'
  np.testing.assert_equal(config['model']['embed_dim'], 32)
