"""Check webdataset shards before training on them: speed, damage, captions and token lengths.

  python -m input_pipeline.inspect --shards '/data/cc3m/{00000..00331}.tar' \\
      [--batches 20] [--batch_size 64] [--workers 0] [--text_length_multiple 16] \\
      [--json report.json]

Runs the trainer's pipeline (input_pipeline.web_pipeline, the released recipe's transform, its
flip, RandAugment and erasing drawn here for the train step to apply unless --augment_on_host)
for `--batches` batches and prints samples/s (and per CPU core, from the CPU time this process and
its workers used; both after the first batch, which includes start-up), the samples skipped by
reason, a few captions with the words and prompts made from them, caption token-length
statistics, and the lengths the trainer would cut the texts to (`config.text_length_multiple`):
per caption, and per batch of `--batch_size`, as the trainer cuts each global batch to its
longest text (give the global batch size to see what a run gets). `--json` writes the same as
one object (to a path or a gs:// URL). A sample that fails in any other way is dropped and
counted as `transform_error` (its traceback logged once), as in training. Shards may be gs://
URLs too.
"""

import argparse
import dataclasses
import json
import resource
import sys
import time
import typing

import numpy as np

from groupvit_jax import filesystem, progress
from input_pipeline import failures, image_transforms, nouns, shards, text, webdataset

if typing.TYPE_CHECKING:
  from input_pipeline import web_pipeline


def _cpu_seconds() -> float:
  """CPU seconds used by this process and its worker processes, live ones included (so that a
  difference of two readings leaves out the workers' start-up)."""
  import psutil  # pylint: disable=g-import-not-at-top

  own = resource.getrusage(resource.RUSAGE_SELF)
  ended = resource.getrusage(resource.RUSAGE_CHILDREN)
  live = 0.0
  for child in psutil.Process().children(recursive=True):
    try:
      times = child.cpu_times()
    except psutil.Error:  # ended since the listing: counted in RUSAGE_CHILDREN
      continue
    live += times.user + times.system
  return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime + live


def caption_examples(paths, count: int, seed: int = 0, num_prompts: int = 3) -> list[dict]:
  """The first `count` readable captions with their words and prompted texts."""
  rng = np.random.default_rng(seed)
  out = []
  for path in paths:
    for record in webdataset.TarShard(path):
      if len(out) == count:
        return out
      if record['skip'] or record['caption'] is None:
        continue
      caption = record['caption'].decode('utf-8', errors='replace').strip()
      words = nouns.prompt_words(caption)
      prompts = text.prompted_texts(caption, words, rng, num_prompts)[1:]
      out.append(
        {
          'key': record['key'],
          'caption': caption,
          'nouns': nouns.extract_nouns(caption),
          'prompt_words': words,
          'prompts': prompts,
        }
      )
  return out


def token_length_stats(tokens: np.ndarray) -> dict:
  """Caption lengths in tokens (with start and end) of int32 [N, L] rows, 0-padded."""
  lengths = np.count_nonzero(tokens, axis=1)
  return {
    'min': int(lengths.min()),
    'mean': float(lengths.mean()),
    'p95': float(np.percentile(lengths, 95)),
    'max': int(lengths.max()),
    'at_context_length': float(np.mean(lengths == tokens.shape[1])),
  }


def length_buckets(lengths: np.ndarray, multiple: int, context_length: int) -> dict[str, int]:
  """How many `lengths` (in tokens) fall on each length the trainer cuts texts to with
  config.text_length_multiple = `multiple` (text.bucket_length), keyed by that length."""
  cut = [text.bucket_length(int(n), multiple, context_length) for n in lengths]
  values, counts = np.unique(np.asarray(cut, np.int64), return_counts=True)
  return {str(v): int(c) for v, c in zip(values, counts)}


def inspect(
  patterns,
  batches: int = 20,
  batch_size: int = 64,
  seed: int = 0,
  config: 'web_pipeline.PipelineConfig | None' = None,
  log=print,
  text_length_multiple: int = 16,
) -> dict:
  """Runs the pipeline over the shards `patterns` name and returns the report (see --json);
  `config` None: the released recipe's."""
  # grain loads here, not when the module is imported: --help and usage errors stay quick.
  from input_pipeline import web_pipeline  # pylint: disable=g-import-not-at-top

  config = config or web_pipeline.PipelineConfig()
  paths = shards.expand(patterns)
  absent = shards.missing(paths)
  if not paths or len(absent) == len(paths):
    raise FileNotFoundError(f'no shard files found for {patterns!r}')
  if absent:
    log(f'warning: {len(absent)} of {len(paths)} shard files are missing (first: {absent[0]})')
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths, batch_size, seed, config, num_epochs=1)
  )
  samples, caption_tokens, batch_lengths = 0, [], []
  # Rates leave out the first batch, which also loads the tagger and tokenizer and starts the
  # workers; `seconds` counts everything.
  cpu_at_start, start = _cpu_seconds(), time.time()
  warm = None  # (time, CPU seconds, samples) after the first batch
  try:
    for done in range(1, batches + 1):
      try:
        batch = next(iterator)
      except StopIteration:
        log('the shards ran out: one epoch read')
        break
      samples += len(batch['image'])
      caption_tokens.append(batch['text'][:, 0])
      # The batch's longest text, caption or prompt: EOT (the largest id) ends each.
      batch_lengths.append(text.text_length(batch['text']))
      if warm is None:
        warm = (time.time(), _cpu_seconds(), samples)
      elapsed = time.time() - start
      eta = progress.format_duration(elapsed / done * (batches - done))
      log(f'batch {done}/{batches} | {samples / elapsed:.1f} samples/s | ETA {eta}')
    # Read before the workers stop: what they prefetched beyond the last batch is in both
    # readings (a full buffer), and their shutdown in neither.
    end = (time.time(), _cpu_seconds())
  finally:
    iterator.close()
  seconds = time.time() - start
  if warm is None or samples == warm[2]:  # one batch only: rate over everything
    warm = (start, cpu_at_start, 0)
  timed = samples - warm[2]
  wall = max(end[0] - warm[0], 1e-9)
  cpu = max(end[1] - warm[1], 1e-9)
  counters = iterator.counters()
  report = {
    'shards': len(paths),
    'batch_size': batch_size,
    'missing_shards': len(absent),
    'samples': samples,
    'skipped': counters['skipped'],
    'skipped_by_reason': {r: counters[f'skipped_{r}'] for r in webdataset.SKIP_REASONS},
    'seconds': seconds,
    'samples_per_second': timed / wall,
    'cpu_seconds': cpu,
    # The number to size hosts by: this process's and its workers' CPU time per sample.
    'samples_per_second_per_core': timed / cpu,
    'augment_on_device': config.transform.augment_on_device,
    'token_length': token_length_stats(np.concatenate(caption_tokens)) if caption_tokens else {},
    'text_length_multiple': text_length_multiple,
    'caption_cut_lengths': {},  # per caption: the lengths it would be cut to, and how many
    'batch_cut_lengths': {},  # per batch of batch_size (captions and prompts)
    'examples': caption_examples(paths, 5, seed, config.num_prompts),
  }
  if caption_tokens:
    context = config.context_length
    captions = np.count_nonzero(np.concatenate(caption_tokens), axis=1)
    report['caption_cut_lengths'] = length_buckets(captions, text_length_multiple, context)
    report['batch_cut_lengths'] = length_buckets(batch_lengths, text_length_multiple, context)
  return report


def _print_report(report: dict) -> None:
  print(
    f'{report["samples"]} samples in {report["seconds"]:.1f} s; after the first batch '
    f'{report["samples_per_second"]:.1f} samples/s, '
    f'{report["samples_per_second_per_core"]:.1f} per CPU core'
  )
  print(
    f'skipped {report["skipped"]}:', {k: v for k, v in report['skipped_by_reason'].items() if v}
  )
  if report['token_length']:
    print('caption tokens:', {k: round(v, 2) for k, v in report['token_length'].items()})
    print(
      f'texts cut to a multiple of {report["text_length_multiple"]} tokens: captions '
      f'{report["caption_cut_lengths"]}; batches of {report["batch_size"]} (the trainer cuts '
      f'each global batch to its longest text) {report["batch_cut_lengths"]}'
    )
  for example in report['examples']:
    print(f'- {example["caption"]!r}\n  nouns {example["nouns"]}; prompts {example["prompts"]}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m input_pipeline.inspect', description=__doc__.split('\n')[0]
  )
  parser.add_argument('--shards', required=True, nargs='+', help='brace patterns or globs')
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--workers', type=int, default=0, help='decoding processes (0: this one)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--no_deit', action='store_true', help='crop and flip only')
  parser.add_argument(
    '--augment_on_host',
    action='store_true',
    help='apply flip, RandAugment and erasing here, as config.data.augment_on_device=False '
    'does (default: drawn here and applied by the train step, as the released configs do)',
  )
  parser.add_argument(
    '--text_length_multiple',
    type=int,
    default=16,
    help="the lengths texts are cut to, as the config key (the released configs' 16)",
  )
  parser.add_argument('--json', help='write the report here')
  args = parser.parse_args(argv)
  from input_pipeline import web_pipeline  # pylint: disable=g-import-not-at-top

  transform = image_transforms.TransformConfig(augment_on_device=not args.augment_on_host)
  if args.no_deit:
    transform = dataclasses.replace(transform, randaugment=False, random_erasing=0.0)
  config = web_pipeline.PipelineConfig(transform=transform, workers=args.workers)
  try:
    report = inspect(
      args.shards,
      args.batches,
      args.batch_size,
      args.seed,
      config,
      log=lambda line: print(line, file=sys.stderr),
      text_length_multiple=args.text_length_multiple,
    )
  except (FileNotFoundError, ValueError, failures.DataError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  _print_report(report)
  if args.json:
    filesystem.write_text(args.json, json.dumps(report, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
