"""Throughput of groupvit_jax's CLIP tokenizer against OpenAI's simple tokenizer.

Both run in this process on the same deterministic captions: 5-20 words drawn
from a fixed list, with some made-up unique words (cache misses), capitalised
words, punctuation, and a few non-ASCII words or HTML entities (which take the
ftfy path). Each tokenizer is timed with a fresh, empty BPE cache ("cold") and
again on the same captions ("warm"). The reference's ids are wrapped into the
same [N, context_length] int32 array so both do the same work, and the arrays
are checked to be identical.

The reference is the ``clip-anytorch`` PyPI package's ``clip/simple_tokenizer.py``
(``pip install --no-deps clip-anytorch==2.6.0``), loaded from its file so that
the package ``__init__`` (which needs torchvision) is never imported.

Usage: python bench/bench_tokenizer.py [--n 20000] [--context-length 77]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))

from groupvit_jax.tokenizer import DEFAULT_BPE_PATH, ClipTokenizer  # noqa: E402

import clip_reference  # noqa: E402

_WORDS = """
a an the of in on at with and or to from by near under over behind next
two three four several many some small large big little old young tall short
red blue green yellow white black brown orange pink purple gray colorful wooden
man woman boy girl child people person group crowd family player rider chef
dog cat horse bird cow sheep elephant giraffe zebra bear duck fish puppy kitten
car bus truck train bicycle motorcycle boat plane airplane street road bridge
table chair bed couch desk kitchen room window door wall floor building house
tree grass field park beach ocean water river lake mountain snow sky cloud sun
pizza sandwich cake plate bowl cup bottle glass fork knife food fruit banana
sitting standing walking running riding holding eating playing looking flying
parked lying jumping smiling wearing carrying watching driving swimming posing
photo picture image view close up top side front back inside outside during
shirt hat jacket dress helmet umbrella bag phone laptop book clock sign light
is are was there it its his her their this that while who which very
""".split()
_PUNCT = ['.', ',', '!', '?', ';', ' -', "'s", '...']
_SYLLABLES = 'ka zu mi ro fle tar quin vex dor sa lo pri bex nul gra tho wen'.split()
_NON_ASCII = [
  'café',
  'naïve',
  'Zoë',
  'jalapeño',
  '北京',
  '東京タワー',
  'Ελλάδα',
  '🐶',
  '&amp;',
  'it&#39;s',
]


def make_captions(n: int, seed: int = 0) -> list[str]:
  """Generate ``n`` deterministic caption-like strings."""
  rng = random.Random(seed)
  captions = []
  for _ in range(n):
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 20))]
    if rng.random() < 0.15:  # a made-up unique-ish word: a BPE cache miss
      name = ''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
      words.insert(rng.randrange(len(words)), name.capitalize())
    if rng.random() < 0.05:  # non-ASCII text or an HTML entity: the ftfy path
      words.insert(rng.randrange(len(words)), rng.choice(_NON_ASCII))
    if rng.random() < 0.3:
      words[0] = words[0].capitalize()
    text = ' '.join(words)
    if rng.random() < 0.5:
      text += rng.choice(_PUNCT)
    captions.append(text)
  return captions


T = TypeVar('T')


def timed(fn: Callable[[], T]) -> tuple[float, T]:
  """Run ``fn`` once and return (seconds, result)."""
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--n', type=int, default=20000, help='number of captions')
  parser.add_argument('--context-length', type=int, default=77)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()

  captions = make_captions(args.n, args.seed)
  ctx = args.context_length
  print(f'{len(captions)} captions, mean {np.mean([len(c.split()) for c in captions]):.1f} words')

  load_s, ours = timed(ClipTokenizer)
  ours_cold_s, ours_ids = timed(lambda: ours.tokenize(captions, ctx))
  ours_warm_s, _ = timed(lambda: ours.tokenize(captions, ctx))

  module = clip_reference.load_module()
  ref_load_s, ref = timed(lambda: module.SimpleTokenizer(str(DEFAULT_BPE_PATH)))
  ref_cold_s, ref_ids = timed(lambda: clip_reference.reference_rows(ref, captions, ctx))
  ref_warm_s, _ = timed(lambda: clip_reference.reference_rows(ref, captions, ctx))

  if not np.array_equal(ours_ids, ref_ids):
    raise SystemExit('ids differ from the reference')

  n = len(captions)
  print(f'vocab load: ours {load_s:.2f} s, reference {ref_load_s:.2f} s')
  for label, ours_s, ref_s in [
    ('cold', ours_cold_s, ref_cold_s),
    ('warm', ours_warm_s, ref_warm_s),
  ]:
    print(
      f'{label}: ours: {n / ours_s:,.0f} texts/s, reference: {n / ref_s:,.0f} texts/s, '
      f'ratio {ref_s / ours_s:.2f}'
    )


if __name__ == '__main__':
  main()
