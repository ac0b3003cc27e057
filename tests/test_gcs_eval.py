"""Model checkpoints and the evaluation command on gs:// (the local emulator): the same
variables and numbers as local copies."""

import json
import os
import re
import uuid

import jax
import numpy as np
import pytest
import tiny_train_config
import torch
from test_eval_datasets import _write as write_segmentation_split

import groupvit_jax
from groupvit_jax import evaluate, filesystem
from groupvit_jax.command_line import json_ready
from groupvit_jax.evaluators import datasets
from groupvit_jax.weights import checkpoint, released

import cli
import hf_reference as ref


@pytest.fixture(scope='module')
def tiny():
  """(model config, random variables) of a tiny model."""
  model_config = tiny_train_config.get_config().model.to_dict()
  model = checkpoint.build_model(model_config)
  variables = jax.jit(model.init)({'params': jax.random.key(0)}, *checkpoint.init_inputs(model))
  return model_config, jax.device_get(variables)


@pytest.fixture(scope='module')
def saved(gcs, tiny, tmp_path_factory):
  """(local checkpoint directory, the same model saved to a gs:// URL)."""
  local = str(tmp_path_factory.mktemp('checkpoint') / 'model')
  url = gcs.url(f'eval/{uuid.uuid4().hex}/model')
  for directory in (local, url):
    checkpoint.save(directory, *tiny, metadata={'step': 7})
  return local, url


def _upload(local: str, url: str) -> None:
  for folder, _, names in os.walk(local):
    for name in names:
      relative = os.path.relpath(os.path.join(folder, name), local)
      filesystem.write_bytes(f'{url}/{relative}', filesystem.read_bytes(os.path.join(folder, name)))


def _assert_same_tree(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_a_gs_checkpoint_loads_as_the_local_copy(tiny, saved):
  local, url = saved
  assert filesystem.listdir(url) == ['config.json', 'variables']
  assert json.loads(filesystem.read_text(f'{url}/config.json'))['step'] == 7
  model_config, variables = checkpoint.load(url)
  assert model_config == checkpoint.load(local)[0]
  _assert_same_tree(variables, checkpoint.load(local)[1])
  _assert_same_tree(variables, tiny[1])
  model = groupvit_jax.load(url)
  _assert_same_tree(model.variables, groupvit_jax.load(local).variables)


def test_overwriting_a_gs_checkpoint(gcs, tiny):
  url = gcs.url(f'eval/{uuid.uuid4().hex}/model')
  model_config, variables = tiny
  checkpoint.save(url, model_config, variables)
  filesystem.write_text(f'{url}/variables/stale', 'left from before')
  with pytest.raises(FileExistsError, match='already exists'):
    checkpoint.save(url, model_config, variables)
  changed = jax.tree.map(lambda v: v + 1, variables)
  checkpoint.save(url, model_config, changed, overwrite=True)
  assert not filesystem.exists(f'{url}/variables/stale')
  _assert_same_tree(checkpoint.load(url)[1], changed)


def test_a_failed_gs_save_leaves_no_checkpoint(gcs, tiny, monkeypatch):
  url = gcs.url(f'eval/{uuid.uuid4().hex}/model')
  checkpoint.save(url, *tiny)
  variables_written = []

  def lose_connection(path, text):
    variables_written.append(filesystem.isdir(f'{url}/variables'))
    raise OSError('connection lost')

  monkeypatch.setattr(filesystem, 'write_text', lose_connection)
  with pytest.raises(OSError, match='connection lost'):
    checkpoint.save(url, *tiny, overwrite=True)
  assert variables_written == [True]  # the config comes last
  assert not filesystem.exists(url)


def test_a_missing_gs_checkpoint_is_named_as_a_local_one(gcs, tmp_path):
  for missing in (str(tmp_path / 'absent'), gcs.url('eval/absent')):
    with pytest.raises(FileNotFoundError, match=f'^{re.escape(missing)} does not exist$'):
      groupvit_jax.load(missing)
    with pytest.raises(
      FileNotFoundError, match=f'^{re.escape(missing)} is not a groupvit_jax checkpoint'
    ):
      checkpoint.load(missing)


def test_evaluation_of_gs_data_writes_the_local_numbers_to_gs(gcs, saved, tmp_path):
  local_checkpoint, url_checkpoint = saved
  data_dir = str(tmp_path / 'data')
  ids = ['2007_000033', '2007_000042', '2008_000001']
  root = os.path.join(data_dir, datasets.LAYOUTS['voc'].root)
  write_segmentation_split(root, datasets.LAYOUTS['voc'], ids, True, (48, 40))
  url = gcs.url(f'eval/{uuid.uuid4().hex}')
  _upload(data_dir, f'{url}/data')

  want = evaluate.run(local_checkpoint, 'voc', data_dir, workers=2)
  process = cli.run(
    'groupvit_jax.evaluate', '--checkpoint', url_checkpoint, '--dataset', 'voc',
    '--data_dir', f'{url}/data', '--json', f'{url}/out/voc.json',
    '--save_predictions', f'{url}/out/pred', '--workers', '2',
  )  # fmt: skip
  assert process.returncode == 0, process.stderr
  got = json.loads(filesystem.read_text(f'{url}/out/voc.json'))
  for key in ('miou', 'macc', 'aacc', 'per_class', 'per_class_acc', 'num_images'):
    assert got[key] == json_ready(want)[key], key
  assert got['num_images'] == 3 and got['data_dir'] == f'{url}/data'
  assert filesystem.listdir(f'{url}/out/pred') == [f'{i}.png' for i in ids]


def test_released_weights_convert_from_gs_as_from_local(gcs, tmp_path):
  hf = ref.make_model(seed=0, **ref.TINY)
  hf.save_pretrained(tmp_path / 'hf')
  torch.save({'model': ref.nvlabs_state_dict(hf, multi_label_logit_scale=2.5)}, tmp_path / 'x.pth')
  url = gcs.url(f'eval/{uuid.uuid4().hex}')
  _upload(str(tmp_path), url)
  for name in ('hf', 'x.pth'):
    want_config, want, source = released.convert(str(tmp_path / name), 2, 2)
    got_config, got, got_source = released.convert(f'{url}/{name}', 2, 2)
    assert got_config == want_config and got_source == source
    _assert_same_tree(got, want)
