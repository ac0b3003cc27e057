"""`python -m input_pipeline.inspect`: the report a user reads before training on shards."""

import collections
import json

import numpy as np
from PIL import Image

from input_pipeline import webdataset
from tests import cli
from tests import shard_fixtures as fx


def test_report_counts_samples_and_damage(tmp_path):
  fx.write_good_shards(str(tmp_path), 2, 10)
  samples = [(name, members) for name, (members, _) in fx.damaged_samples().items()]
  webdataset.write_shard(str(tmp_path / '00002.tar'), samples)
  report_path = tmp_path / 'report' / 'inspect.json'
  result = cli.run(
    'input_pipeline.inspect',
    '--shards', f'{tmp_path}/{{00000..00002}}.tar',
    '--batches', '10',
    '--batch_size', '8',
    '--json', str(report_path),
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(report_path.read_text())
  # One epoch of 20 good samples ends the run before 10 batches: 8 + 8 + 4.
  assert report['samples'] == 20
  expected = {reason: 0 for reason in webdataset.SKIP_REASONS}
  for _, reason in fx.damaged_samples().values():
    expected[reason] += 1
  assert report['skipped_by_reason'] == expected
  assert report['skipped'] == len(fx.damaged_samples())
  assert report['samples_per_second'] > 0 and report['samples_per_second_per_core'] > 0
  assert report['token_length']['min'] >= 3 and report['token_length']['max'] <= 77
  first = report['examples'][0]
  assert first['nouns'][:3] == ['photo', 'dog', 'cat'] and len(first['prompts']) == 3
  assert 'samples/s' in result.stdout and 'skipped 8' in result.stdout
  assert 'ETA' in result.stderr


def test_missing_shards_are_an_error(tmp_path):
  result = cli.run('input_pipeline.inspect', '--shards', f'{tmp_path}/{{0..3}}.tar')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: no shard files found')


def test_released_recipe_delivers_every_plain_image_and_keeps_the_oddities(tmp_path):
  # Plain random-noise JPEGs, as in the report of the RandAugment crash (1 sample in ~700 drew
  # Posterize at level 10, which today's Pillow refuses), and the web's odd but valid images.
  rng = np.random.default_rng(0)
  plain = [
    (f'{i:06d}', {'jpg': fx.encode(Image.fromarray(noise), 'JPEG'), 'txt': b'a noisy photo'})
    for i, noise in enumerate(rng.integers(0, 256, (2400, 64, 96, 3), dtype=np.uint8))
  ]
  oddities = fx.web_oddities()
  for s in range(4):
    webdataset.write_shard(str(tmp_path / f'{s:05d}.tar'), plain[s * 600 : (s + 1) * 600])
  webdataset.write_shard(
    str(tmp_path / '00004.tar'), [(name, members) for name, (members, _) in oddities.items()]
  )
  result = cli.run(
    'input_pipeline.inspect',
    '--shards', f'{tmp_path}/{{00000..00004}}.tar',
    '--batches', '50',
    '--batch_size', '64',
    '--json', str(tmp_path / 'report.json'),
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((tmp_path / 'report.json').read_text())
  kept = [name for name, (_, reason) in oddities.items() if not reason]
  assert report['samples'] == 2400 + len(kept)
  skipped = collections.Counter(reason for _, reason in oddities.values() if reason)
  assert {r: n for r, n in report['skipped_by_reason'].items() if n} == dict(skipped)
