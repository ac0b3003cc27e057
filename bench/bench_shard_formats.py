"""Reading raw samples: webdataset tar shards (sequential, window shuffle) against the same
samples converted to ArrayRecord (random access, global shuffle), one core.

  python bench/bench_shard_formats.py [--shards 8] [--per_shard 250]

Writes `--shards` tar shards of 512-pixel JPEGs with captions to a temporary directory,
converts them to ArrayRecord, and reports raw samples per second (no decoding) read through
grain both ways, after a first pass that warms the page cache, plus the conversion time. The
reference is the tar pipeline of input_pipeline/web_pipeline.py measured in the same run.
"""

import argparse
import os
import pickle
import sys
import tempfile
import time

import grain
import numpy as np
from array_record.python import array_record_module

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from bench_input_pipeline import captions, photo_like_jpegs  # noqa: E402

from input_pipeline import webdataset  # noqa: E402


def write_tars(directory: str, shards: int, per_shard: int) -> list[str]:
  images = photo_like_jpegs(32, 512, np.random.default_rng(0))
  texts = captions()
  paths = []
  for s in range(shards):
    samples = [
      (f'{s:05d}{i:05d}', {'jpg': images[i % 32], 'txt': texts[i % len(texts)]})
      for i in range(per_shard)
    ]
    paths.append(os.path.join(directory, f'{s:05d}.tar'))
    webdataset.write_shard(paths[-1], samples)
  return paths


def convert(tar_paths: list[str], directory: str) -> list[str]:
  """Each tar shard -> one ArrayRecord file of pickled {'key', 'image', 'caption'}."""
  out = []
  for path in tar_paths:
    target = os.path.join(directory, os.path.basename(path).replace('.tar', '.array_record'))
    writer = array_record_module.ArrayRecordWriter(target, 'group_size:1')
    for record in webdataset.TarShard(path):
      writer.write(pickle.dumps({k: record[k] for k in ('key', 'image', 'caption')}))
    writer.close()
    out.append(target)
  return out


def tar_stream(paths: list[str]):
  shards = grain.MapDataset.source(paths).shuffle(seed=0).map(webdataset.TarShard)
  samples = grain.experimental.InterleaveIterDataset(shards, cycle_length=4)
  return grain.experimental.WindowShuffleIterDataset(samples, window_size=10_000, seed=0)


def array_record_stream(paths: list[str]):
  source = grain.sources.ArrayRecordDataSource(paths)
  return grain.MapDataset.source(source).shuffle(seed=0).map(pickle.loads).to_iter_dataset()


def rate(dataset) -> tuple[float, int]:
  start = time.perf_counter()
  count = sum(1 for _ in dataset)
  return count / (time.perf_counter() - start), count


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--shards', type=int, default=8)
  parser.add_argument('--per_shard', type=int, default=250)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    tars = write_tars(directory, args.shards, args.per_shard)
    start = time.perf_counter()
    records = convert(tars, directory)
    conversion = time.perf_counter() - start
    size = sum(os.path.getsize(p) for p in tars) / 2**20
    rows = {}
    for name, make in [
      ('tar: shard shuffle + 10,000 window', lambda: tar_stream(tars)),
      ('ArrayRecord: global shuffle', lambda: array_record_stream(records)),
    ]:
      rate(make())  # warm the page cache
      rows[name] = rate(make())
  reference = rows['tar: shard shuffle + 10,000 window'][0]
  total = args.shards * args.per_shard
  print(f'{total} samples, {size:.0f} MiB of tar; conversion {total / conversion:.0f} samples/s')
  print(f'{"read":36s} {"samples/s":>10s} {"ratio":>6s}')
  for name, (value, count) in rows.items():
    assert count == total, (name, count)
    print(f'{name:36s} {value:10.0f} {value / reference:6.2f}')


if __name__ == '__main__':
  main()
