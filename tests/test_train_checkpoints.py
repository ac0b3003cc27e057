"""Which data-iterator state each process takes back from a checkpoint (the gathering itself
runs across real processes in tests/test_multiprocess.py)."""

import pytest

from groupvit_jax.training import train_checkpoints

WEB = {'processes': [{'grain': {'file': 0}}, {'grain': {'file': 1}}]}
SYNTHETIC = {'processes': [{'step': 7}, {'step': 7}]}


def _as_process(monkeypatch, index, count):
  monkeypatch.setattr(train_checkpoints.jax, 'process_index', lambda: index)
  monkeypatch.setattr(train_checkpoints.jax, 'process_count', lambda: count)


@pytest.mark.parametrize('index', [0, 1])
def test_each_process_takes_back_its_own_state(monkeypatch, index):
  _as_process(monkeypatch, index, 2)
  assert train_checkpoints._this_process(WEB, 7, 'ckpt') == {'grain': {'file': index}}


def test_states_that_are_all_alike_suit_any_process_count(monkeypatch):
  for index, count in ((0, 1), (2, 4)):
    _as_process(monkeypatch, index, count)
    assert train_checkpoints._this_process(SYNTHETIC, 7, 'ckpt') == {'step': 7}


def test_another_process_count_restarts_the_data_order_with_a_warning(monkeypatch, caplog):
  _as_process(monkeypatch, 0, 4)
  assert train_checkpoints._this_process(WEB, 7, 'ckpt') is None
  assert 'written by 2 processes and this run has 4' in caplog.text


def test_a_one_process_checkpoint_of_the_earlier_layout(monkeypatch):
  _as_process(monkeypatch, 0, 1)
  assert train_checkpoints._this_process({'step': 3}, 3, 'ckpt') == {'step': 3}
  assert train_checkpoints._every_process({'step': 3}) == [{'step': 3}]
