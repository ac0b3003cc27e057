"""The training loop: exact resume after SIGTERM and kill -9, NaN stop, start-up errors.

The runs use tests/tiny_train_config.py (a few seconds a step at most) on the 8 virtual CPU
devices that conftest.py sets up, which the subprocesses inherit.
"""

import os
import signal

import jax
import numpy as np
import pytest
import tiny_train_config

from groupvit_jax.training import config_checks, train
from groupvit_jax.training.metric_writers import METRICS_FILE
from groupvit_jax.weights import checkpoint

import cli
from cli import checkpoint_steps, read_metrics, train_rows, wait_for

CONFIG_FILE = 'tests/tiny_train_config.py'
# Everything a step logs that must not depend on when the run was interrupted.
DETERMINISTIC_KEYS = (
  'loss',
  'loss_image_text',
  'loss_multi_label',
  'grad_norm',
  'lr',
  'logit_scale',
  'multi_label_logit_scale',
)


def test_interrupted_runs_log_the_same_losses_as_an_uninterrupted_one(tmp_path):
  """SIGTERM saves a checkpoint and exits cleanly; kill -9 loses only the steps since the last
  checkpoint; either way the restarted run logs bit-identical losses to a run that never
  stopped, because parameters, optimizer state, BatchNorm statistics, step, RNG key and the
  data position are all restored. Parameters are sharded (fsdp=2), so restoring lays them out
  again on the mesh."""
  # Two devices; the runs share XLA's persistent cache, so only the first one compiles.
  env = dict(
    XLA_FLAGS='--xla_force_host_platform_device_count=2',
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  reference = str(tmp_path / 'reference')
  # 24 steps, a checkpoint every 3: however far run 1 gets past step 4 before it stops (the
  # loop queues steps ahead), run 2 still has a checkpoint of its own to write.
  common = (f'--config={CONFIG_FILE}', '--config.mesh.fsdp=2', '--config.total_steps=24')
  result = cli.run('groupvit_jax.main', *common, f'--workdir={reference}', **env)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = train_rows(reference)
  assert sorted(expected) == list(range(1, 25))

  workdir = str(tmp_path / 'interrupted')
  args = (*common, f'--workdir={workdir}')
  # 1. SIGTERM after step 4 (not a checkpoint step): the run saves where it is and exits 0.
  run = cli.start('groupvit_jax.main', *args, log_path=str(tmp_path / 'run1.log'), **env)
  wait_for(
    lambda: (
      os.path.exists(os.path.join(workdir, METRICS_FILE))
      and max(train_rows(workdir), default=0) >= 4
    ),
    run,
  )
  run.send_signal(signal.SIGTERM)
  assert run.wait(timeout=120) == 0, open(tmp_path / 'run1.log').read()[-3000:]
  stopped_at = max(train_rows(workdir))
  assert checkpoint_steps(workdir)[-1] == stopped_at
  assert 'SIGTERM' in open(tmp_path / 'run1.log').read()

  # 2. Resume, then kill -9 once a later checkpoint is complete and a step beyond it logged.
  run = cli.start('groupvit_jax.main', *args, log_path=str(tmp_path / 'run2.log'), **env)
  own = (stopped_at // 3 + 1) * 3  # run 2's first checkpoint
  wait_for(lambda: checkpoint_steps(workdir)[-1] >= own and max(train_rows(workdir)) > own, run)
  run.kill()
  run.wait()
  assert f'resumed from the checkpoint at step {stopped_at}' in open(tmp_path / 'run2.log').read()
  last_checkpoint = checkpoint_steps(workdir)[-1]

  # 3. Resume from the last complete checkpoint and finish.
  result = cli.run('groupvit_jax.main', *args, **env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'resumed from the checkpoint at step {last_checkpoint}' in result.stderr
  got = train_rows(workdir)
  assert sorted(got) == sorted(expected)  # steps re-run after kill -9 are logged once
  for step, row in expected.items():
    for key in DETERMINISTIC_KEYS:
      assert got[step][key] == row[key], (step, key)

  # The final weights are the same too, and exported for groupvit_jax.load.
  _, ref_vars = checkpoint.load(os.path.join(reference, 'model'))
  _, got_vars = checkpoint.load(os.path.join(workdir, 'model'))
  jax.tree.map(np.testing.assert_array_equal, ref_vars, got_vars)


# 65 s: slow set, to keep CI under 20 minutes; tests/test_train_step.py checks in the default
# set that a non-finite step leaves the state unchanged.
@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  original = train.loss_and_grads

  def nan_from_step_5(model, mesh, state, batch, *chunks):
    metrics, batch_stats, grads = original(model, mesh, state, batch, *chunks)
    poisoned = jax.numpy.where(state.step >= 4, jax.numpy.nan, metrics['loss'])
    return dict(metrics, loss=poisoned), batch_stats, grads

  monkeypatch.setattr(train, 'loss_and_grads', nan_from_step_5)
  config = tiny_train_config.get_config()
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r'step 5.*last good checkpoint \(step 3\)'):
    train.train_and_evaluate(config, workdir)
  assert checkpoint_steps(workdir) == [3]
  rows = read_metrics(workdir)
  assert rows[-1]['step'] == 5 and rows[-1]['loss'] is None  # NaN is logged as null


@pytest.mark.parametrize(
  'change, message',
  [
    (lambda c: setattr(c, 'batch_size', 12), 'not divisible by the 8 devices'),
    (
      lambda c: setattr(c.optimizer, 'warmup_step', 3),
      r'did you mean config\.optimizer\.warmup_steps',
    ),
    (lambda c: setattr(c, 'log_every_steps', 0), 'log_every_steps must be a positive integer'),
    (lambda c: setattr(c, 'total_steps', 0), r'config\.total_steps must be a positive integer'),
    (
      lambda c: setattr(c.optimizer, 'warmup_steps', -1),
      r'config\.optimizer\.warmup_steps must be a non-negative integer',
    ),
    (lambda c: setattr(c.model.vision, 'widht', 3), r'config\.model\.vision\.widht'),
    (lambda c: setattr(c.data, 'name', 'webdatset'), 'config.data.name'),
    (lambda c: setattr(c.optimizer, 'warmup_steps', 8), r'warmup_steps \(8\) must be in \[0, '),
    (
      lambda c: setattr(c.data, 'image_size', 48),
      r'config\.data\.image_size \(48\) differs from config\.model\.vision\.image_size',
    ),
    (
      lambda c: setattr(c, 'profile_steps', (3, 2)),
      r'config\.profile_steps must be \(first, last\)',
    ),
    (lambda c: setattr(c, 'profile_steps', (0, 2)), r'1 <= first <= last'),
  ],
)
def test_bad_configs_fail_at_start_up_and_leave_the_workdir_alone(tmp_path, change, message):
  config = tiny_train_config.get_config()
  change(config)
  with pytest.raises(config_checks.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_missing_shards_name_the_key_and_the_layout(tmp_path):
  result = cli.run(
    'groupvit_jax.main',
    '--config=configs/cc_yfcc_2stage.py',
    f'--workdir={tmp_path / "run"}',
    f'--config.data.shards=("{tmp_path}/cc3m/{{00000..00002}}.tar",)',
    '--config.batch_size=8',
  )
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: config.data.shards: 3 of 3 shard files'), last
  assert 'KEY.txt' in last
  assert not os.path.exists(tmp_path / 'run')


def test_unknown_override_is_a_one_line_error(tmp_path):
  result = cli.run(
    'groupvit_jax.main',
    f'--config={CONFIG_FILE}',
    f'--workdir={tmp_path / "run"}',
    '--config.optimizer.warmup_step=3',
  )
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: unknown config key') and 'warmup_steps' in last, last


def test_profile_steps_write_a_trace_for_tensorboard(tmp_path):
  workdir = tmp_path / 'run'
  result = cli.run(
    'groupvit_jax.main',
    f'--config={CONFIG_FILE}',
    f'--workdir={workdir}',
    '--config.total_steps=4',
    '--config.profile_steps=(2, 3)',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'wrote a profile of steps 2-3 to {workdir}/tensorboard' in result.stderr
  # The profile plugin's layout: plugins/profile/<run>/<host>.xplane.pb, one run.
  (run,) = os.listdir(workdir / 'tensorboard' / 'plugins' / 'profile')
  traces = list((workdir / 'tensorboard' / 'plugins' / 'profile' / run).glob('*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 10_000
