"""The words of a caption that become GroupViT's prompted texts, by part-of-speech tagging.

The released code tags captions with NLTK's averaged perceptron tagger and keeps the words
tagged NN, NNS, NNP and every VB* tag (verbs too: `PROMPT_TAGS`). NLTK's tagger model is not
on the package registries, so two backends serve:

- 'nltk': NLTK's averaged perceptron tagger, used when its data is installed
  (`python -m nltk.downloader averaged_perceptron_tagger_eng punkt_tab`);
- 'pattern': the Brill-style tagger of Tom de Smedt's Pattern, whose lexicon ships inside the
  `textblob` wheel, so it works offline. On reference/noun_gold.tsv it finds nouns with
  F1 0.97 (tests/test_nouns.py).

  extract_nouns('a dog running on the beach')  # ['dog', 'beach']
  prompt_words('a dog running on the beach')   # ['dog', 'running', 'beach']
"""

import functools
from typing import Callable, Sequence

NOUN_TAGS = ('NN', 'NNS', 'NNP', 'NNPS')
# The released code's list (WordAugTokenizeWrapper): nouns and verbs, but not NNPS.
PROMPT_TAGS = ('NN', 'NNS', 'NNP', 'VBG', 'VB', 'VBD', 'VBN', 'VBP', 'VBZ')
BACKENDS = ('nltk', 'pattern')


def _nltk_tagger() -> Callable[[str], list[tuple[str, str]]] | None:
  """NLTK's word tokenizer and perceptron tagger, or None when their data is not installed."""
  try:
    import nltk  # pylint: disable=g-import-not-at-top

    nltk.data.find('taggers/averaged_perceptron_tagger_eng')
    nltk.data.find('tokenizers/punkt_tab')
  except (ImportError, LookupError):
    return None
  return lambda caption: nltk.pos_tag(nltk.word_tokenize(caption))


def _pattern_tagger() -> Callable[[str], list[tuple[str, str]]]:
  from textblob.en import tag  # pylint: disable=g-import-not-at-top

  return tag


@functools.lru_cache(maxsize=None)
def tagger(backend: str | None = None) -> Callable[[str], list[tuple[str, str]]]:
  """caption -> [(word, Penn Treebank tag)]. `backend` None: NLTK if installed, else Pattern."""
  if backend not in (None, *BACKENDS):
    raise ValueError(f'unknown tagger backend {backend!r}; expected one of {BACKENDS}')
  if backend in (None, 'nltk'):
    found = _nltk_tagger()
    if found is not None:
      return found
    if backend == 'nltk':
      raise LookupError(
        "NLTK's tagger data is not installed: python -m nltk.downloader "
        'averaged_perceptron_tagger_eng punkt_tab'
      )
  return _pattern_tagger()


def extract_words(caption: str, tags: Sequence[str], backend: str | None = None) -> list[str]:
  """The words of `caption` whose tag is in `tags`, in caption order, repeats kept."""
  if not caption.strip():
    return []
  return [word for word, tag in tagger(backend)(caption) if tag in tags]


def extract_nouns(caption: str, backend: str | None = None) -> list[str]:
  """The nouns of `caption` (NN, NNS, NNP, NNPS), in caption order."""
  return extract_words(caption, NOUN_TAGS, backend)


def prompt_words(caption: str, backend: str | None = None) -> list[str]:
  """The words the released code puts into prompts: nouns and verbs (`PROMPT_TAGS`)."""
  return extract_words(caption, PROMPT_TAGS, backend)
