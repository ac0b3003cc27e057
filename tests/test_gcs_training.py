"""`python -m groupvit_jax.main` with its workdir and its shards on gs:// (the local emulator):
trains, is killed with `kill -9`, and resumes exactly, writing everything a local workdir
gets (config, metrics, TensorBoard events, checkpoints, pictures, the final model) to the
bucket."""

import json
import os
import re
import uuid

import numpy as np
import pytest

import groupvit_jax
from groupvit_jax import filesystem
from tests import cli
from tests import shard_fixtures as fx
from tests.test_main_webdataset import SHRINK
from tests.test_metric_writers import tensorboard_scalars

DETERMINISTIC_KEYS = ('loss', 'loss_image_text', 'loss_multi_label', 'grad_norm', 'lr')


@pytest.mark.slow  # 124 s in CI; test_trainer kills and resumes locally in the default set
def test_a_run_on_gs_is_killed_and_resumes_exactly(gcs, tmp_path, compile_cache):
  root = gcs.url(f'train/{uuid.uuid4().hex}')
  for path in fx.write_good_shards(str(tmp_path / 'shards'), 4, 6):
    filesystem.write_bytes(f'{root}/shards/{os.path.basename(path)}', filesystem.read_bytes(path))
  args = (
    '--config=configs/cc_yfcc_2stage.py',
    f'--config.data.shards=("{root}/shards/{{00000..00003}}.tar",)',
    *SHRINK,
    '--config.total_steps=24',
    '--config.checkpoint_every_steps=8',
  )
  # The same run with a local workdir, never stopped.
  reference = str(tmp_path / 'reference')
  result = cli.run('groupvit_jax.main', *args, f'--workdir={reference}', **compile_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = cli.train_rows(reference)

  workdir = f'{root}/run'
  checkpoints = f'{workdir}/checkpoints'

  def committed_steps():
    """Steps orbax has finished: on gs:// a step's folder exists from the start of its save
    and gets commit_success.txt when complete."""
    if not filesystem.isdir(checkpoints):
      return []
    steps = [d for d in filesystem.listdir(checkpoints) if d.isdigit()]
    return sorted(
      int(d) for d in steps if filesystem.isfile(f'{checkpoints}/{d}/commit_success.txt')
    )

  run = cli.start(
    'groupvit_jax.main',
    *args,
    f'--workdir={workdir}',
    log_path=str(tmp_path / 'killed.log'),
    **compile_cache,
  )
  try:
    cli.wait_for(committed_steps, run, timeout=400)
    killed_after = committed_steps()[-1]
  finally:
    run.kill()
    run.wait()
  result = cli.run('groupvit_jax.main', *args, f'--workdir={workdir}', **compile_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = int(re.search(r'resumed from the checkpoint at step (\d+)', result.stderr)[1])
  assert killed_after <= resumed < 24

  rows = [
    json.loads(line) for line in filesystem.read_text(f'{workdir}/metrics.jsonl').splitlines()
  ]
  rows = [row for row in rows if 'loss' in row]
  assert [row['step'] for row in rows] == list(range(1, 25))  # steps redone after the kill: once
  for row in rows:
    for key in DETERMINISTIC_KEYS:
      assert row[key] == expected[row['step']][key], (row['step'], key)
  assert filesystem.isfile(f'{workdir}/config.json')
  assert 24 in committed_steps()

  # TensorBoard loads the events from the bucket's bytes as from a local workdir's.
  local_events = tmp_path / 'events'
  local_events.mkdir()
  for name in filesystem.listdir(f'{workdir}/tensorboard'):
    (local_events / name).write_bytes(filesystem.read_bytes(f'{workdir}/tensorboard/{name}'))
  scalars = tensorboard_scalars(str(local_events))
  assert {step for step, _ in scalars['loss']} == set(range(1, 25))

  # The final model loads straight from gs:// and equals the local run's.
  got = groupvit_jax.load(f'{workdir}/model')
  want = groupvit_jax.load(os.path.join(reference, 'model'))
  np.testing.assert_array_equal(
    np.asarray(got.encode_text(['a dog'])), np.asarray(want.encode_text(['a dog']))
  )
