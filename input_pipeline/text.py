"""Caption and prompt texts for GroupViT's multi-label contrastive loss.

Each image's caption comes with k prompted texts: k of its nouns, sampled without replacement,
each put into a random template ('a bad photo of a {}.', ...). A caption with fewer than k nouns
fills the missing slots with the caption itself, as NVlabs' WordAugTokenizeWrapper does.

  texts = prompted_texts('a red circle', ('circle',), np.random.default_rng(0))
  tokens = tokenize_batch(captions, nouns, rng)  # int32 [B, 1 + k, 77]

text_length and bucket_length give the lengths token rows are cut to (the trainer's
config.text_length_multiple, training/text_trim.py; inspect reports them).
"""

from typing import Sequence

import numpy as np

from groupvit_jax.prompts import IMAGENET_TEMPLATES
from groupvit_jax.tokenizer import tokenize


def prompted_texts(
  caption: str,
  nouns: Sequence[str],
  rng: np.random.Generator,
  k: int = 3,
  templates: Sequence[str] = IMAGENET_TEMPLATES,
) -> list[str]:
  """Return [caption, prompt_1, ..., prompt_k], padded with the caption when nouns run short."""
  if k < 0:
    raise ValueError(f'k must be >= 0, got {k}')
  num_prompts = min(k, len(nouns))
  # Sampling indices rather than the nouns keeps each listed noun to at most one prompt.
  picks = rng.choice(len(nouns), num_prompts, replace=False) if num_prompts else []
  prompts = [templates[rng.integers(len(templates))].format(nouns[i]) for i in picks]
  return [caption, *prompts] + [caption] * (k - num_prompts)


def tokenize_batch(
  captions: Sequence[str],
  nouns: Sequence[Sequence[str]],
  rng: np.random.Generator,
  k: int = 3,
  context_length: int = 77,
) -> np.ndarray:
  """Tokenize each caption with its k prompted texts into int32 [B, 1 + k, context_length]."""
  if len(captions) != len(nouns):
    raise ValueError(f'{len(captions)} captions but {len(nouns)} noun lists')
  texts = [t for caption, n in zip(captions, nouns) for t in prompted_texts(caption, n, rng, k)]
  return tokenize(texts, context_length).reshape(len(captions), 1 + k, context_length)


def text_length(tokens: np.ndarray) -> int:
  """The end of the longest text in int token rows [..., L]: 1 + the last EOT position (each
  row's argmax, EOT being the largest id; rows are zero padded after it)."""
  return int(np.argmax(tokens, axis=-1).max()) + 1


def bucket_length(length: int, multiple: int, context_length: int) -> int:
  """`length` rounded up to a multiple of `multiple`, at most `context_length`; 0: no cut."""
  if multiple <= 0:
    return context_length
  return min(-(-length // multiple) * multiple, context_length)
