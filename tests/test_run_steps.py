"""Durations in epochs become steps when the run starts, for the batch size the run has."""

import json
import math
import os

import numpy as np
import pytest

from configs import cc_yfcc_2stage
from groupvit_jax.training import config_checks, optimizer, steps, train
from tests import cli
from tests import shard_fixtures as fx
from tests.test_main_webdataset import SHRINK

# ceil(28,663,147 / 1024): CC3M + CC12M + YFCC14M in batches of 1024.
STEPS_PER_EPOCH_AT_1024 = 27_992


def released(batch_size: int, **changes):
  config = cc_yfcc_2stage.get_config('/data/eval')  # with evaluators, evaluated every epoch
  config.batch_size = batch_size
  for key, value in changes.items():
    section, _, key = key.rpartition('.')
    setattr(config[section] if section else config, key, value)
  config_checks.check(config)
  return config


def test_a_smaller_batch_keeps_the_epochs_and_scales_the_rates():
  config = released(1024)
  assert config.num_train_examples == 28_663_147
  assert math.ceil(28_663_147 / 1024) == STEPS_PER_EPOCH_AT_1024
  run = steps.run_steps(config)
  assert run == steps.RunSteps(
    total=30 * 27_992, warmup=2 * 27_992, eval_every=27_992, steps_per_epoch=27_992
  )
  assert run.updates == 839_760
  assert steps.describe(config, run) == (
    'durations: 30 epochs of 28,663,147 examples at global batch 1,024 = 839,760 steps '
    '(27,992 per epoch); warm-up 55,984 steps (2 epochs); evaluation every 27,992 steps (1 epoch)'
  )
  rates = optimizer.scaled_rates(config.optimizer, 1024)
  assert rates == pytest.approx(dict(lr=1.6e-3 / 4, warmup_lr=4e-6 / 4, min_lr=4e-5 / 4))
  schedule = optimizer.schedule_from_config(
    config.optimizer, batch_size=1024, warmup_steps=run.warmup, total_steps=run.updates
  )
  np.testing.assert_allclose(schedule(0), 1e-6, rtol=1e-6)
  np.testing.assert_allclose(schedule(run.warmup), 4e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(run.updates), 1e-5, rtol=1e-5)

  # At the released batch everything is as released.
  config = released(4096)
  assert steps.run_steps(config) == steps.RunSteps(209_940, 13_996, 6_998, 6_998)
  assert optimizer.scaled_rates(config.optimizer, 4096) == dict(
    lr=1.6e-3, warmup_lr=4e-6, min_lr=4e-5
  )


def test_explicit_steps_win_over_epochs():
  config = released(
    1024, total_steps=1000, **{'optimizer.warmup_steps': 10}, eval_every_steps=100, epochs=5.0
  )
  run = steps.run_steps(config)
  assert run == steps.RunSteps(1000, 10, 100, STEPS_PER_EPOCH_AT_1024)
  assert steps.describe(config, run) == (
    'durations: 1,000 steps (config.total_steps) at global batch 1,024 = 0.03572 epochs of '
    '28,663,147 examples; warm-up 10 steps (config.optimizer.warmup_steps); evaluation every '
    '100 steps'
  )
  # Each explicit key wins on its own; eval_every_steps=0 evaluates at the end only.
  assert steps.run_steps(released(1024, eval_every_steps=0)).eval_every == 0
  run = steps.run_steps(released(1024, **{'optimizer.warmup_steps': 0}))
  assert (run.total, run.warmup) == (30 * STEPS_PER_EPOCH_AT_1024, 0)
  # Fractional epochs round up to a whole step.
  assert steps.run_steps(released(1024, epochs=7.5)).total == math.ceil(7.5 * 27_992)


def test_gradient_accumulation_rounds_to_whole_updates_and_warms_up_in_updates():
  config = released(8, num_train_examples=24, epochs=3.0, **{'optimizer.grad_accum_steps': 4})
  run = steps.run_steps(config)
  # 3 epochs of 3 batches = 9 batches, up to 12 (3 updates of 4); 2 epochs = 6 batches, so
  # 2 updates of warm-up; evaluation every epoch, in batches.
  assert run == steps.RunSteps(12, 2, 3, 3, grad_accum_steps=4)
  assert run.updates == 3
  assert steps.describe(config, run) == (
    'durations: 3 epochs of 24 examples at global batch 8 x 4 accumulated = 12 steps (3 per '
    'epoch); warm-up 2 optimizer updates (2 epochs); evaluation every 3 steps (1 epoch)'
  )
  # The rates scale with the batch an update sees: 8 x 4.
  rates = optimizer.scaled_rates(config.optimizer, 8)
  assert rates['lr'] == pytest.approx(1.6e-3 * 32 / 4096)

  # Batch 1024 accumulated 4 times is the released run: the same updates, warm-up and rates.
  config = released(1024, **{'optimizer.grad_accum_steps': 4})
  run = steps.run_steps(config)
  assert (run.updates, run.warmup) == (209_940, 13_996)
  assert optimizer.scaled_rates(config.optimizer, 1024) == pytest.approx(
    dict(lr=1.6e-3, warmup_lr=4e-6, min_lr=4e-5)
  )

  with pytest.raises(config_checks.ConfigError, match=r'total_steps \(10\) must be a multiple'):
    steps.run_steps(released(8, total_steps=10, **{'optimizer.grad_accum_steps': 4}))


def test_a_run_without_a_length_names_the_keys_and_leaves_the_workdir_alone(tmp_path):
  import tiny_train_config  # pylint: disable=g-import-not-at-top

  config = tiny_train_config.get_config()
  config.total_steps = None
  message = (
    r'set config\.total_steps, or config\.epochs and config\.num_train_examples .*'
    r'config\.epochs and config\.num_train_examples are not set'
  )
  with pytest.raises(config_checks.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')

  config.epochs = 3.0  # an epoch of what?
  with pytest.raises(config_checks.ConfigError, match=r'config\.num_train_examples is not set'):
    steps.run_steps(config)
  config = released(1024)
  del config.optimizer['warmup_epochs']
  with pytest.raises(config_checks.ConfigError, match=r'config\.optimizer\.warmup_epochs or'):
    steps.run_steps(config)
  with pytest.raises(config_checks.ConfigError, match=r'warmup_epochs \(2\) is 6 optimizer'):
    steps.run_steps(released(8, num_train_examples=24, epochs=2.0))


@pytest.mark.slow  # 56 s in CI; the unit tests above check the arithmetic
def test_the_command_line_trains_the_epochs_of_the_batch_it_is_given(tmp_path):
  fx.write_good_shards(str(tmp_path / 'shards'), 2, 12)
  workdir = tmp_path / 'run'
  explicit = ('--config.total_steps', '--config.optimizer.warmup_steps')
  result = cli.run(
    'groupvit_jax.main',
    '--config=configs/cc_yfcc_2stage.py',
    f'--workdir={workdir}',
    f'--config.data.shards=("{tmp_path}/shards/{{00000..00001}}.tar",)',
    *(a for a in SHRINK if a.split('=')[0] not in explicit),
    '--config.batch_size=8',
    '--config.num_train_examples=24',
    '--config.epochs=3',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert (
    'durations: 3 epochs of 24 examples at global batch 8 = 9 steps (3 per epoch); warm-up '
    '6 steps (2 epochs); no evaluation (config.evals is empty)'
  ) in result.stderr
  assert 'learning rates: peak 3.125e-06, warm-up from 7.812e-09, minimum 7.81' in result.stderr
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'loss' in r] == list(range(1, 10))
  # The logged rates follow the derived schedule at batch 8: 1/512 of the released rates.
  peak, start, floor = 1.6e-3 / 512, 4e-6 / 512, 4e-5 / 512
  cosine = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * 2 / 3))  # 2 of 3 updates in
  np.testing.assert_allclose(
    [rows[0]['lr'], rows[3]['lr'], rows[6]['lr'], rows[8]['lr']],
    [start, start + (peak - start) / 2, peak, cosine],
    rtol=1e-5,
  )
