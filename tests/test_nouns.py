"""Noun extraction for prompted texts against hand-labelled captions (tests/data/noun_gold.tsv)."""

import collections
import csv
import os

import pytest

from input_pipeline import nouns

GOLD = os.path.join(os.path.dirname(__file__), 'data', 'noun_gold.tsv')


def _gold():
  with open(GOLD, encoding='utf-8') as f:
    return [(r['caption'], r['nouns'].split(',')) for r in csv.DictReader(f, delimiter='\t')]


def _f1(backend):
  true_pos = predicted = expected = 0
  for caption, gold in _gold():
    found = collections.Counter(nouns.extract_nouns(caption, backend))
    want = collections.Counter(gold)
    true_pos += sum((found & want).values())
    predicted += sum(found.values())
    expected += sum(want.values())
  precision, recall = true_pos / predicted, true_pos / expected
  return 2 * precision * recall / (precision + recall)


def test_offline_backend_finds_the_gold_nouns():
  assert len(_gold()) == 60
  assert _f1('pattern') >= 0.85


def test_nltk_backend_when_its_data_is_installed():
  if nouns._nltk_tagger() is None:
    pytest.skip("NLTK's tagger data is not installed (no network in CI)")
  assert _f1('nltk') >= 0.85


def test_words_keep_caption_order_and_prompt_words_add_verbs():
  caption = 'a dog running on the beach at sunset'
  assert nouns.extract_nouns(caption, 'pattern') == ['dog', 'beach', 'sunset']
  assert nouns.prompt_words(caption, 'pattern') == ['dog', 'running', 'beach', 'sunset']


@pytest.mark.parametrize('caption', ['', '   ', '...', '12 34'])
def test_captions_without_words_give_no_nouns(caption):
  assert nouns.extract_nouns(caption, 'pattern') == []


def test_unknown_backend_is_named():
  with pytest.raises(ValueError, match='spacy'):
    nouns.extract_nouns('a cat', 'spacy')
