"""Samples per CPU-second of the input pipeline's host work, today's against the reference.

  python bench/bench_input_pipeline.py [--sizes 256 512 1024] [--samples 400]

For each JPEG width, every row runs `web_pipeline.make_example` (decode, RandomResizedCrop 224,
the flip / RandAugment / erasing draws or their application, caption words, prompts and
tokens) on one core, over photo-like JPEGs (quality 90, about 3 bits per pixel, as photos
re-encoded by img2dataset at its default quality 95 have: 1.9 to 4.0 on scikit-image's sample
photos), and reports samples per CPU-second. The reference, measured in the same run, is the
pipeline as it was before issue 15: flip, RandAugment and erasing applied on the host
(`config.data.augment_on_device=False`). Rows with and without the DeiT set (RandAugment and
random erasing) are each compared with the reference of the same recipe. Columns:

  samples/s/core   samples per CPU-second of the whole per-sample host work
  ratio            over the reference row of the same recipe
  x decode         the row's CPU time per sample over decoding the whole JPEG with Pillow
                   (Image.open(...).convert('RGB')), measured in the same run
  cores @10k/s     cores that feed 10,000 samples/s, a GroupViT-S chip at 50% MFU

With `--device`, the device's share: `device_augment.augment` (flip, RandAugment, erasing)
jitted on the default JAX backend over a batch of --device_batch crops, in samples/s.
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
PLAIN = dict(randaugment=False, random_erasing=0.0)
HOST = dict(augment_on_device=False)
# name -> (TransformConfig settings, the name of its reference row)
ROWS = {
  'reference: crop + flip on the host': (dict(HOST, **PLAIN), None),
  'crop; flip drawn for the device': (PLAIN, 'reference: crop + flip on the host'),
  'reference: DeiT set on the host': (HOST, None),
  'DeiT set drawn for the device': ({}, 'reference: DeiT set on the host'),
}


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


def cpu_seconds_per_call(fn, count: int) -> float:
  """CPU seconds per call of fn(i) over i < count, after a few untimed calls."""
  for i in range(8):
    fn(i)
  start = time.process_time()
  for i in range(count):
    fn(i)
  return (time.process_time() - start) / count


def host_table(size: int, samples: int) -> list[dict]:
  """One record per row of ROWS for `size`-pixel JPEGs, plus Pillow's whole decode."""
  images, texts = photo_like_jpegs(32, size, np.random.default_rng(0)), captions()
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
  decode = cpu_seconds_per_call(
    lambda i: Image.open(io.BytesIO(images[i % len(images)])).convert('RGB'), samples
  )
  seconds = {}
  for name, (settings, _) in ROWS.items():
    config = web_pipeline.PipelineConfig(transform=image_transforms.TransformConfig(**settings))
    seconds[name] = cpu_seconds_per_call(
      lambda i, config=config: web_pipeline.make_example(records[i % len(records)], 0, config),
      samples,
    )
  out = []
  for name, (_, reference) in ROWS.items():
    reference_s = seconds[reference or name]
    out.append(
      {
        'size': size,
        'row': name,
        'samples_per_cpu_second': 1.0 / seconds[name],
        'ratio': reference_s / seconds[name],
        'x_pillow_decode': seconds[name] / decode,
        'cores_for_10k': CHIP_SAMPLES_PER_SECOND * seconds[name],
      }
    )
  return out


def device_rate(batch: int, repeats: int = 5) -> dict:
  """samples/s of device_augment.augment on the default JAX backend over `batch` crops."""
  import jax  # pylint: disable=g-import-not-at-top

  from input_pipeline import device_augment  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  config = image_transforms.TransformConfig()
  draws = [image_transforms.augment_params(rng, config) for _ in range(batch)]
  params = {k: np.stack([d[k] for d in draws]) for k in draws[0]}
  images = rng.integers(0, 256, (batch, 224, 224, 3), np.uint8)
  images, params = jax.device_put((images, params))
  augment = jax.jit(device_augment.augment)
  augment(images, params).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = augment(images, params)
  out.block_until_ready()
  seconds = (time.perf_counter() - start) / repeats
  return {'backend': jax.default_backend(), 'batch': batch, 'samples_per_second': batch / seconds}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--samples', type=int, default=400)
  parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512, 1024])
  parser.add_argument('--device', action='store_true', help='also time device_augment')
  parser.add_argument('--device_batch', type=int, default=256)
  args = parser.parse_args()
  print(
    f'{"JPEG":>5s} {"host work per sample":52s} {"samples/s/core":>14s} {"ratio":>6s} '
    f'{"x decode":>8s} {"cores @10k/s":>12s}'
  )
  for size in args.sizes:
    for r in host_table(size, args.samples):
      print(
        f'{size:5d} {r["row"]:52s} {r["samples_per_cpu_second"]:14.1f} {r["ratio"]:6.2f} '
        f'{r["x_pillow_decode"]:8.2f} {r["cores_for_10k"]:12.1f}'
      )
  if args.device:
    r = device_rate(args.device_batch)
    print(
      f'device_augment on {r["backend"]}, batch {r["batch"]}: {r["samples_per_second"]:.0f} '
      'samples/s'
    )


if __name__ == '__main__':
  main()
