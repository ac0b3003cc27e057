"""Samples per CPU core of the train transform on 512-pixel JPEGs, with and without the DeiT set.

  python bench/bench_input_pipeline.py [--samples 400]

  python bench/bench_input_pipeline.py --size 256  # shards resized by img2dataset

Each row runs `web_pipeline.make_example` (decode, RandomResizedCrop 224 + flip, optional
RandAugment and random erasing, caption words, prompts and tokens) on one core and reports
samples per CPU-second. The reference, measured in the same run, is the same work with every
JPEG decoded at full size before the crop (what a plain Pillow or torchvision pipeline does);
the ratio column is each row's rate over it. The last column is how many such cores feed
10,000 samples/s, a GroupViT-S chip at 50% MFU.
"""

import argparse
import csv
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from input_pipeline import image_transforms, web_pipeline  # noqa: E402

CHIP_SAMPLES_PER_SECOND = 10_000
_GOLD = os.path.join(os.path.dirname(__file__), '..', 'tests', 'data', 'noun_gold.tsv')


def photo_like_jpegs(count: int, size: int, rng: np.random.Generator) -> list[bytes]:
  """JPEGs (quality 90) `size` wide and 3/4 to 1 of it tall, with smooth colour regions, edges
  and grain, whose decode cost is close to a photo's."""
  out = []
  for _ in range(count):
    height = int(rng.integers(size * 3 // 4, size + 1))
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, height), Image.BICUBIC), np.float32)
    blocks = rng.uniform(-40, 40, (height // 32 + 1, size // 32 + 1, 3)).repeat(32, 0).repeat(32, 1)
    pixels = base + blocks[:height, :size] + rng.normal(0, 12, (height, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=90)
    out.append(buffer.getvalue())
  return out


def captions() -> list[bytes]:
  with open(_GOLD, encoding='utf-8') as f:
    return [row['caption'].encode() for row in csv.DictReader(f, delimiter='\t')]


def rate(fn, records, samples: int) -> float:
  """Samples per CPU-second of fn over `samples` calls (records reused in turn)."""
  start = time.process_time()
  for i in range(samples):
    fn(records[i % len(records)], i)
  return samples / (time.process_time() - start)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--samples', type=int, default=400)
  parser.add_argument('--size', type=int, default=512, help='JPEG width in pixels')
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images, texts = photo_like_jpegs(32, args.size, rng), captions()
  records = [
    {
      'key': str(i),
      'image': images[i % len(images)],
      'caption': texts[i % len(texts)],
      'position': 0,
      'index': i,
      'skip': '',
    }
    for i in range(64)
  ]
  plain = dict(randaugment=False, random_erasing=0.0)
  configs = {
    'reference: full decode, crop + flip': dict(plain, dct_scaling=False),
    'DCT-scaled decode, crop + flip': plain,
    'DCT-scaled decode, + DeiT set': {},
  }
  rows = {}
  for name, settings in configs.items():
    config = web_pipeline.PipelineConfig(transform=image_transforms.TransformConfig(**settings))
    rows[name] = lambda r, i, config=config: web_pipeline.make_example(r, 0, config)
  for fn in rows.values():  # warm-up: tagger lexicon, tokenizer caches
    rate(fn, records, 16)
  results = {name: rate(fn, records, args.samples) for name, fn in rows.items()}
  reference = results['reference: full decode, crop + flip']
  print(f'{args.size}-pixel JPEGs, one core')
  print(f'{"transform":40s} {"samples/s/core":>15s} {"ratio":>7s} {"cores for 10k/s":>16s}')
  for name, value in results.items():
    print(
      f'{name:40s} {value:15.1f} {value / reference:7.2f} {CHIP_SAMPLES_PER_SECOND / value:16.0f}'
    )


if __name__ == '__main__':
  main()
