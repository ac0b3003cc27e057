"""The soak bench, smaller and with a fixed seed: thousands of samples with the released
augmentation, every oddity and every damage, through decoding workers; every sample accounted
for, and every RandAugment op drawn at its top level (10) along the way."""

import collections

import numpy as np
from PIL import Image

from bench import soak_input_pipeline as soak
from input_pipeline import randaugment
from tests import shard_fixtures as fx

# ~0.15% of samples draw a given op at level 10 (1/15 op, 1/2 applied, 2.3% clamped at 10,
# two slots), so 4,000 samples draw each of the 15 about 6 times.
PLAIN = 4000


def _noise_jpegs(count: int, seed: int) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [
    fx.encode(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)), 'JPEG')
    for _ in range(count)
  ]


def test_soak_accounts_for_every_sample_with_every_op_at_level_10(tmp_path, monkeypatch):
  paths, expected = soak.write_corpus(str(tmp_path), _noise_jpegs(PLAIN, 0), seed=0)
  # Decoding workers: grain processes, as in training.
  with_workers = soak.soak(paths, workers=2, image_size=64, log=lambda line: None)
  assert with_workers['delivered'] == expected['delivered']
  assert with_workers['skipped'] == expected['skipped']

  # The same epoch in this process, recording every op applied and its level. Each sample's
  # draws come from (seed, shard position, index), so the workers applied the same ops.
  applied = collections.Counter()
  argument = randaugment.argument

  def recorded(name, level, sign, width, height):
    applied[name, level == randaugment.MAX_LEVEL] += 1
    return argument(name, level, sign, width, height)

  monkeypatch.setattr(randaugment, 'argument', recorded)
  in_process = soak.soak(paths, workers=0, image_size=64, log=lambda line: None)
  assert in_process['delivered'] == with_workers['delivered']
  assert in_process['skipped'] == with_workers['skipped']
  at_level_10 = {name: applied[name, True] for name in randaugment.OPS}
  assert min(at_level_10.values()) >= 1, at_level_10
