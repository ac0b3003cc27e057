"""The trainer's data: synthetic batches by step, exact state restore, per-process rows, shard
patterns."""

import numpy as np
import pytest

from groupvit_jax import tokenizer
from input_pipeline import shards, synthetic, text, train_data

CONFIG = synthetic.SyntheticConfig(image_size=32, seed=3)


def make(batch=8, process_index=0, process_count=1):
  return train_data.SyntheticIterator(CONFIG, batch, 3, 32, process_index, process_count)


def test_batch_is_the_examples_of_its_step_with_their_prompts():
  it = make()
  next(it)
  batch = next(it)  # step 1: examples 8..15
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.uint8
  assert batch['text'].shape == (8, 4, 32) and batch['text'].dtype == np.int32
  for row, index in enumerate(range(8, 16)):
    example = synthetic.sample(CONFIG, 'train', index)
    np.testing.assert_array_equal(batch['image'][row], example.image)
    texts = text.prompted_texts(
      example.caption, example.nouns, np.random.default_rng([CONFIG.seed, index]), 3
    )
    np.testing.assert_array_equal(batch['text'][row], tokenizer.tokenize(texts, 32))


def test_restored_state_gives_the_same_batches():
  it = make()
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_processes_take_disjoint_rows_that_make_up_the_global_batch():
  whole = next(make(batch=8))
  parts = [next(make(8, p, 4)) for p in range(4)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_batch_must_split_over_processes():
  with pytest.raises(ValueError, match='not divisible by 3 processes'):
    make(batch=8, process_count=3)


@pytest.mark.parametrize(
  'pattern, expected',
  [
    ('a/{000..002}.tar', ['a/000.tar', 'a/001.tar', 'a/002.tar']),
    ('{8..10}.tar', ['8.tar', '9.tar', '10.tar']),
    ('{cc3m,cc12m}/{0..1}.tar', ['cc3m/0.tar', 'cc3m/1.tar', 'cc12m/0.tar', 'cc12m/1.tar']),
    ('plain.tar', ['plain.tar']),
  ],
)
def test_brace_patterns(pattern, expected):
  assert shards.expand_braces(pattern) == expected


def test_bad_brace_patterns_are_named():
  with pytest.raises(ValueError, match='empty range'):
    shards.expand_braces('{5..1}.tar')
  with pytest.raises(ValueError, match='cannot read'):
    shards.expand_braces('{abc}.tar')
