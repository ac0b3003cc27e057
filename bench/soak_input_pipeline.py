"""Soak: the whole web-data pipeline over a web-like corpus of valid, odd and damaged samples.

  python bench/soak_input_pipeline.py [--plain 3000] [--size 384] [--workers 2] [--seed 0]

Writes webdataset shards of `--plain` photo-like JPEGs with real captions, every web oddity
(tests/shard_fixtures.web_oddities: spacer GIFs, animations, 1 x 3000 images, 1-bit, grey +
alpha, progressive JPEGs, PNG and TIFF under .jpg names, EXIF rotation, 8 x 8 images, float
TIFF) and every kind of damage (shard_fixtures.damaged_samples), plus a shard cut short and a
shard of garbage, all shuffled together. Then it reads one epoch through the trainer's pipeline
(the released recipe's DeiT set, `--workers` decoding processes) and prints samples/s, samples
per CPU-second and the skip table, and checks the outcome: every plain image and every kept
oddity is delivered, and everything else is skipped under its documented reason. Exits 1 if
not. tests/test_soak.py runs a smaller fixed-seed version in the default test set.
"""

import argparse
import collections
import os
import random
import resource
import sys
import tempfile
import time

import numpy as np

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_BENCH, '..'))
sys.path.insert(0, _BENCH)

from bench_input_pipeline import captions, photo_like_jpegs  # noqa: E402

from input_pipeline import image_transforms, web_pipeline, webdataset  # noqa: E402
from tests import shard_fixtures as fx  # noqa: E402

SAMPLES_PER_SHARD = 100
# The truncated shard keeps its first two samples; the garbage shard yields nothing.
_TRUNCATED_KEPT = 2


def write_corpus(directory: str, plain_images: list[bytes], seed: int = 0) -> tuple[list, dict]:
  """Shards of `plain_images` (with captions), the oddities and the damage, shuffled.

  Returns (shard paths, expected outcome): 'delivered' (the number of samples the pipeline
  must yield) and 'skipped' (reason -> count)."""
  texts = captions()
  samples = [
    (f'plain{i:06d}', {'jpg': data, 'txt': texts[i % len(texts)]})
    for i, data in enumerate(plain_images)
  ]
  expected = collections.Counter()
  for group in (fx.web_oddities(seed), fx.damaged_samples()):
    for name, (members, reason) in group.items():
      samples.append((name, members))
      expected[reason] += 1
  random.Random(seed).shuffle(samples)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for start in range(0, len(samples), SAMPLES_PER_SHARD):
    paths.append(os.path.join(directory, f'{len(paths):05d}.tar'))
    webdataset.write_shard(paths[-1], samples[start : start + SAMPLES_PER_SHARD])
  truncated = os.path.join(directory, 'truncated.tar')
  webdataset.write_shard(
    truncated, [(f'cut{i}', {'jpg': plain_images[i], 'txt': b'a photo'}) for i in range(4)]
  )
  fx.truncate(truncated, fx.member_offsets(truncated)[4] + 700)  # inside the third image
  garbage = os.path.join(directory, 'garbage.tar')
  with open(garbage, 'wb') as f:
    f.write(np.random.default_rng(seed).bytes(4096))
  expected.update(truncated_shard=1, unreadable_shard=1)
  delivered = len(plain_images) + expected.pop('') + _TRUNCATED_KEPT
  return paths + [truncated, garbage], {'delivered': delivered, 'skipped': dict(expected)}


def _cpu_seconds() -> float:
  return sum(
    getattr(resource.getrusage(who), field)
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    for field in ('ru_utime', 'ru_stime')
  )


def soak(
  paths: list[str],
  workers: int = 2,
  image_size: int = 224,
  batch_size: int = 64,
  seed: int = 0,
  log=print,
) -> dict:
  """One epoch of `paths` through the pipeline with the DeiT set applied on the host (so that
  every op meets every image; training applies the same draws on the device): delivered
  samples, skips by reason, samples/s and samples per CPU-second."""
  transform = image_transforms.TransformConfig(image_size=image_size, augment_on_device=False)
  config = web_pipeline.PipelineConfig(transform=transform, workers=workers)
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths, batch_size, seed, config, num_epochs=1)
  )
  start, cpu_start, delivered = time.time(), _cpu_seconds(), 0
  try:
    for batch in iterator:
      delivered += len(batch['image'])
      elapsed = time.time() - start
      log(f'{delivered} samples | {delivered / elapsed:.1f} samples/s')
  finally:
    iterator.close()
  counters = iterator.counters()
  return {
    'delivered': delivered,
    'skipped': {r: n for r in webdataset.SKIP_REASONS if (n := counters[f'skipped_{r}'])},
    'samples_per_second': delivered / (time.time() - start),
    'samples_per_cpu_second': delivered / (_cpu_seconds() - cpu_start),
  }


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--plain', type=int, default=3000, help='plain valid images (at least 4)')
  parser.add_argument('--size', type=int, default=384, help='their width in pixels (>= 32)')
  parser.add_argument('--workers', type=int, default=2, help='decoding processes (0: this one)')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.plain < 4 or args.size < 32 or args.workers < 0:
    parser.error('--plain must be at least 4, --size at least 32 and --workers at least 0')
  with tempfile.TemporaryDirectory() as directory:
    images = photo_like_jpegs(64, args.size, np.random.default_rng(args.seed))
    paths, expected = write_corpus(
      directory, [images[i % len(images)] for i in range(args.plain)], args.seed
    )
    report = soak(paths, args.workers, seed=args.seed, log=lambda line: None)
  print(
    f'{report["delivered"]} samples delivered ({expected["delivered"]} expected) with '
    f'{args.workers} workers: {report["samples_per_second"]:.1f} samples/s, '
    f'{report["samples_per_cpu_second"]:.1f} per CPU-second'
  )
  print(f'{"skip reason":20s} {"count":>6s} {"expected":>9s}')
  for reason in webdataset.SKIP_REASONS:
    got, want = report['skipped'].get(reason, 0), expected['skipped'].get(reason, 0)
    if got or want:
      print(f'{reason:20s} {got:6d} {want:9d}')
  good = report['delivered'] == expected['delivered'] and report['skipped'] == expected['skipped']
  print('as expected' if good else 'NOT as expected')
  return 0 if good else 1


if __name__ == '__main__':
  sys.exit(main())
