"""Prompt templates and the caption + prompted-noun text batches for the multi-label loss."""

import numpy as np
import pytest

from groupvit_jax import tokenize
from groupvit_jax.prompts import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES
from input_pipeline import synthetic
from input_pipeline.text import prompted_texts, tokenize_batch

CAPTION = 'a striped red circle and a blue star on a gray background'
NOUNS = ('circle', 'star', 'square', 'heart', 'ring')


def test_imagenet_templates():
  assert len(IMAGENET_TEMPLATES) == 80
  assert len(set(IMAGENET_TEMPLATES)) == 80
  assert all(t.count('{}') == 1 and t.count('{') == 1 for t in IMAGENET_TEMPLATES)
  assert IMAGENET_TEMPLATES[0] == 'a bad photo of a {}.'
  assert IMAGENET_TEMPLATES[1] == 'a photo of many {}.'
  assert IMAGENET_TEMPLATES[35] == 'a {} in a video game.'
  assert IMAGENET_TEMPLATES[39] == 'a photo of a {}.'
  assert IMAGENET_TEMPLATES[44] == 'a origami {}.'
  assert IMAGENET_TEMPLATES[-1] == 'a tattoo of the {}.'
  assert SIMPLE_TEMPLATES == ('a photo of a {}.',)


def _noun_of(prompt: str, nouns) -> str:
  """The one noun whose template filled in gives `prompt`."""
  hits = [(t, n) for t in IMAGENET_TEMPLATES for n in nouns if t.format(n) == prompt]
  assert len(hits) == 1, prompt
  return hits[0][1]


@pytest.mark.parametrize('seed', range(20))
def test_enough_nouns_distinct_prompts(seed):
  texts = prompted_texts(CAPTION, NOUNS, np.random.default_rng(seed))
  assert len(texts) == 4 and texts[0] == CAPTION
  used = [_noun_of(p, NOUNS) for p in texts[1:]]
  assert len(set(used)) == 3


def test_exactly_k_nouns_uses_each_once():
  texts = prompted_texts(CAPTION, NOUNS[:3], np.random.default_rng(0))
  assert sorted(_noun_of(p, NOUNS) for p in texts[1:]) == sorted(NOUNS[:3])


def test_sampling_covers_nouns_and_templates():
  rng = np.random.default_rng(0)
  nouns, templates = set(), set()
  for _ in range(300):
    for prompt in prompted_texts(CAPTION, NOUNS, rng)[1:]:
      noun = _noun_of(prompt, NOUNS)
      nouns.add(noun)
      templates.add(next(t for t in IMAGENET_TEMPLATES if t.format(noun) == prompt))
  assert nouns == set(NOUNS)
  assert len(templates) > 70  # 900 draws over 80 templates


def test_few_nouns_padded_with_caption():
  texts = prompted_texts(CAPTION, ('star',), np.random.default_rng(1))
  assert texts[0] == CAPTION and texts[2:] == [CAPTION, CAPTION]
  assert _noun_of(texts[1], ('star',)) == 'star'
  assert prompted_texts(CAPTION, (), np.random.default_rng(1)) == [CAPTION] * 4


def test_k_zero_and_bad_k():
  assert prompted_texts(CAPTION, NOUNS, np.random.default_rng(0), k=0) == [CAPTION]
  with pytest.raises(ValueError):
    prompted_texts(CAPTION, NOUNS, np.random.default_rng(0), k=-1)


def test_custom_templates():
  texts = prompted_texts(CAPTION, NOUNS, np.random.default_rng(0), k=5, templates=SIMPLE_TEMPLATES)
  assert sorted(texts[1:]) == sorted(f'a photo of a {n}.' for n in NOUNS)


def test_seeded_rng_is_deterministic():
  a = [prompted_texts(CAPTION, NOUNS, np.random.default_rng(7)) for _ in range(2)]
  assert a[0] == a[1]
  b = [tokenize_batch([CAPTION] * 4, [NOUNS] * 4, np.random.default_rng(7)) for _ in range(2)]
  np.testing.assert_array_equal(b[0], b[1])


def test_tokenize_batch_matches_tokenize():
  data = synthetic.batch(synthetic.SyntheticConfig(), 'train', range(8))
  captions, nouns = data['caption'], data['nouns']
  tokens = tokenize_batch(captions, nouns, np.random.default_rng(3), k=3, context_length=32)
  assert tokens.shape == (8, 4, 32) and tokens.dtype == np.int32
  rng = np.random.default_rng(3)
  for row, caption, n in zip(tokens, captions, nouns):
    texts = prompted_texts(caption, n, rng)
    np.testing.assert_array_equal(row, tokenize(texts, context_length=32))


def test_tokenize_batch_edges():
  rng = np.random.default_rng(0)
  assert tokenize_batch([CAPTION], [()], rng, k=0).shape == (1, 1, 77)
  empty = tokenize_batch([], [], rng)
  assert empty.shape == (0, 4, 77) and empty.dtype == np.int32
  padded = tokenize_batch([CAPTION], [()], rng)
  np.testing.assert_array_equal(padded[0], np.repeat(tokenize([CAPTION]), 4, axis=0))
  with pytest.raises(ValueError):
    tokenize_batch([CAPTION], [], rng)
