"""`main` with the paper's config pointed at local webdataset shards, the model shrunk."""

import json
import os
import signal
import time

import pytest

from tests import cli
from tests import shard_fixtures as fx

SHRINK = (
  '--config.model.vision.image_size=32',
  '--config.model.vision.patch_size=8',
  '--config.model.vision.width=32',
  '--config.model.vision.depths=(1,1,1)',
  '--config.model.vision.num_heads=2',
  '--config.model.vision.num_group_tokens=(8,4,0)',
  '--config.model.vision.num_output_groups=(8,4)',
  '--config.model.text.context_length=16',
  '--config.model.text.width=32',
  '--config.model.text.depth=1',
  '--config.model.text.num_heads=2',
  '--config.model.embed_dim=32',
  '--config.model.projection_hidden_dim=64',
  '--config.model.dtype=float32',
  '--config.data.image_size=32',
  '--config.data.context_length=16',
  '--config.data.shuffle_buffer=16',
  '--config.data.workers=0',
  '--config.batch_size=8',
  '--config.total_steps=3',
  '--config.optimizer.warmup_steps=1',
  '--config.log_every_steps=1',
  '--config.checkpoint_every_steps=3',
)


def test_paper_config_trains_on_local_shards_and_counts_damage(tmp_path):
  cc3m = fx.write_good_shards(str(tmp_path / 'cc3m'), 2, 6)
  fx.write_good_shards(str(tmp_path / 'cc12m'), 1, 6, start=12)
  broken = tmp_path / 'cc12m' / '00001.tar'
  broken.write_bytes(b'not a tar file')
  workdir = tmp_path / 'run'
  result = cli.run(
    'groupvit_jax.main',
    '--config=configs/cc_yfcc_2stage.py',
    f'--workdir={workdir}',
    f'--config.data.shards=("{os.path.dirname(cc3m[0])}/{{00000..00001}}.tar",'
    f'"{tmp_path}/cc12m/{{00000..00001}}.tar")',
    *SHRINK,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [1, 2, 3]
  assert all(r['loss'] > 0 for r in rows)
  # 3 steps of 8 take more than the 18 good samples of an epoch, so every shard was opened.
  assert rows[-1]['skipped_unreadable_shard'] >= 1
  assert rows[-1]['skipped'] == rows[-1]['skipped_unreadable_shard']
  assert rows[-1]['skipped_transform_error'] == 0  # every reason is a metric, even at 0
  assert 'skipped damaged samples since step' in result.stderr
  assert "'skipped_unreadable_shard': 1" in result.stderr
  assert os.path.isdir(workdir / 'checkpoints' / '3')


def test_unreadable_data_stops_with_a_clear_error(tmp_path):
  for i in range(2):
    (tmp_path / f'{i:05d}.tar').write_bytes(b'downloaded html error page')
  result = cli.run(
    'groupvit_jax.main',
    '--config=configs/cc_yfcc_2stage.py',
    f'--workdir={tmp_path / "run"}',
    f'--config.data.shards=("{tmp_path}/{{00000..00001}}.tar",)',
    *SHRINK,
  )
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'unreadable_shard' in last, last


@pytest.mark.slow  # 108 s in CI
def test_a_killed_worker_ends_the_run_with_a_message_and_the_rerun_resumes(tmp_path):
  fx.write_good_shards(str(tmp_path / 'shards'), 4, 25)
  workdir = str(tmp_path / 'run')
  overrides = {
    '--config.data.workers': '2',
    '--config.total_steps': '20',
    '--config.checkpoint_every_steps': '2',
  }
  args = (
    '--config=configs/cc_yfcc_2stage.py',
    f'--workdir={workdir}',
    f'--config.data.shards=("{tmp_path}/shards/{{00000..00003}}.tar",)',
    *(a for a in SHRINK if a.split('=')[0] not in overrides),
    *(f'{k}={v}' for k, v in overrides.items()),
  )
  # The two runs share XLA's persistent cache, so only the first one compiles.
  env = dict(
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  log = tmp_path / 'run1.log'
  run = cli.start('groupvit_jax.main', *args, log_path=str(log), **env)
  cli.wait_for(lambda: 4 in cli.checkpoint_steps(workdir), run)
  workers = cli.worker_processes(run.pid)
  assert len(workers) == 2, workers
  os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
  killed_at = time.time()
  returncode = run.wait(timeout=120)
  assert time.time() - killed_at < 60  # an error within a bounded time, never a hang
  assert returncode != 0
  errors = [line for line in log.read_text().splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, log.read_text()[-3000:]
  assert errors[0].startswith('error: a data worker process died (killed by SIGKILL'), errors
  assert 'The last checkpoint is step' in errors[0]
  stopped_at = cli.checkpoint_steps(workdir)[-1]
  assert stopped_at < 20, 'the run should have been killed before its end'

  result = cli.run('groupvit_jax.main', *args, **env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'resumed from the checkpoint at step {stopped_at}' in result.stderr
  assert max(cli.train_rows(workdir)) == 20
