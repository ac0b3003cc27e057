"""The training loop waits for the devices only where it must: it reads the metrics at log
steps, and a NaN or Inf step between two of them still stops the run at the next one."""

import sys

import jax
import numpy as np
import pytest
import tiny_train_config

from groupvit_jax.training import train
from input_pipeline import train_data

from cli import checkpoint_steps, read_metrics

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason='needs 8 (virtual) devices')


def _called_from_train() -> bool:
  return sys._getframe(2).f_globals.get('__name__') == train.__name__


def test_the_loop_reads_the_devices_only_at_log_steps(tmp_path, monkeypatch):
  config = tiny_train_config.get_config()
  config.log_every_steps, config.checkpoint_every_steps, config.total_steps = 4, 8, 8
  # Captions with colours, textures and backgrounds end within 20-29 tokens of 32: cut to 24
  # or 32 (and the step compiled for both).
  config.data.caption_attributes, config.data.textures, config.data.min_area = True, True, 0.05
  config.text_length_multiple = 8

  dispatched, lengths = [], []  # the metrics and text length of each step, in order
  make_train_step = train.make_train_step

  def counting_make_train_step(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def step(state, batch):
      state, metrics = step_fn(state, batch)
      dispatched.append(metrics)
      lengths.append(batch['text'].shape[-1])
      return state, metrics

    return step

  reads, waits = [], []  # (steps dispatched so far, what) for the loop's calls
  device_get, block_until_ready = jax.device_get, jax.block_until_ready

  def counting_device_get(x):
    if _called_from_train():
      reads.append(len(dispatched))
    return device_get(x)

  def counting_block_until_ready(x):
    if _called_from_train():
      which = [i + 1 for i, m in enumerate(dispatched) if m is x]
      waits.append((len(dispatched), which))
    return block_until_ready(x)

  monkeypatch.setattr(train, 'make_train_step', counting_make_train_step)
  monkeypatch.setattr(jax, 'device_get', counting_device_get)
  monkeypatch.setattr(jax, 'block_until_ready', counting_block_until_ready)
  metrics = train.train_and_evaluate(config, str(tmp_path))

  assert lengths == [24, 32, 32, 32, 24, 32, 24, 24]
  assert reads == [4, 8]  # the log steps only (8 is also the last step and a checkpoint)
  # The only other waits are for steps two behind the last one dispatched.
  assert waits and all(which == [now - train._STEPS_AHEAD] for now, which in waits), waits
  rows = [row for row in read_metrics(str(tmp_path)) if 'loss' in row]
  assert [row['step'] for row in rows] == [4, 8]
  assert all(row['samples_per_second'] > 0 and np.isfinite(row['loss']) for row in rows)
  assert metrics['loss'] == rows[-1]['loss']


def test_a_nan_between_log_steps_stops_the_run_at_the_next_one(tmp_path, monkeypatch):
  config = tiny_train_config.get_config()
  config.log_every_steps, config.checkpoint_every_steps, config.total_steps = 4, 2, 8
  # Step 3 alone (its batch, which the step leaves unused) gives a NaN loss: step 4 is finite.
  data = train_data.create_iterator(config.data, config.batch_size, config.seed)
  sums = [int(data.make_batch(i)['text'].sum()) for i in range(8)]
  data.close()
  assert len(set(sums)) == 8
  original = train.loss_and_grads

  def nan_at_step_3(model, mesh, state, batch, *args, **kwargs):
    metrics, batch_stats, grads = original(model, mesh, state, batch, *args, **kwargs)
    poisoned = jax.numpy.where(batch['text'].sum() == sums[2], jax.numpy.nan, metrics['loss'])
    return dict(metrics, loss=poisoned), batch_stats, grads

  monkeypatch.setattr(train, 'loss_and_grads', nan_at_step_3)
  message = (
    r'non-finite loss nan or gradient norm .* at step 3 \(1 of the steps 3-4, read at step 4\)'
    r'.*last good checkpoint \(step 2\)'
  )
  with pytest.raises(FloatingPointError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint_steps(str(tmp_path)) == [2]  # nothing saved after the NaN
  rows = read_metrics(str(tmp_path))
  assert rows[-1]['step'] == 4 and np.isfinite(rows[-1]['loss'])  # step 4 itself was finite
