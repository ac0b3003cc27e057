"""Webdataset shards on gs:// (the local emulator): the same samples as local copies, read in a
few large requests, transient errors retried and permanent ones not."""

import json
import os
import time
import uuid

import numpy as np
import pytest

from groupvit_jax import filesystem
from input_pipeline import image_transforms, shards, train_data, web_pipeline, webdataset
from tests import cli
from tests import shard_fixtures as fx

PLAIN = web_pipeline.PipelineConfig(
  transform=image_transforms.TransformConfig(image_size=32, randaugment=False, random_erasing=0.0),
  context_length=16,
  shuffle_buffer=7,
  cycle_length=2,
)
# A test's failing request is tried 4 times within about 0.1 s.
FAST_RETRIES = (0.01, 0.02, 0.04)


@pytest.fixture(scope='module')
def copies(gcs, tmp_path_factory):
  """(local paths, the same files' gs:// URLs): 3 good shards of 6 samples (0..17), a shard
  mixing good and damaged samples, a truncated shard and a missing one."""
  directory = str(tmp_path_factory.mktemp('shards'))
  paths = fx.write_good_shards(directory, 3, 6)
  samples = [(f'good{n}', {'jpg': fx.solid_jpeg(n), 'txt': b'a red ball'}) for n in (20, 21)]
  samples += [(name, members) for name, (members, _) in fx.damaged_samples().items()]
  paths.append(os.path.join(directory, '00003.tar'))
  webdataset.write_shard(paths[-1], samples)
  truncated = fx.write_good_shards(os.path.join(directory, 't'), 1, 4, start=100)[0]
  fx.truncate(truncated, fx.member_offsets(truncated)[7] + 600)
  paths.append(os.path.join(directory, '00004.tar'))
  os.rename(truncated, paths[-1])
  paths.append(os.path.join(directory, '00005.tar'))  # missing
  prefix = f'data/{uuid.uuid4().hex}'
  urls = [gcs.url(f'{prefix}/{os.path.basename(p)}') for p in paths]
  for path, url in zip(paths[:-1], urls):
    filesystem.write_bytes(url, filesystem.read_bytes(path))
  return paths, urls


def _records(path, **kwargs):
  return [
    (r['key'], r['image'], r['caption'], r['index'], r['skip'])
    for r in webdataset.TarShard(path, **kwargs)
  ]


def _epoch(paths, config=PLAIN, batch_size=4):
  """(the sample numbers and captions of one epoch's batches, in order; skip counts)."""
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths, batch_size, 0, config, num_epochs=1)
  )
  rows = [
    (fx.number_of(image), text.tobytes())
    for batch in iterator
    for image, text in zip(batch['image'], batch['text'])
  ]
  return rows, dict(iterator.skipped)


def _name(url):
  return url.split('/', 3)[3]


def test_tar_shard_reads_the_same_records_from_gs(copies):
  paths, urls = copies
  for path, url in zip(paths, urls):
    assert _records(url, position=3) == _records(path, position=3), url
  assert _records(urls[-1]) == [('', None, None, -1, 'unreadable_shard')]
  assert _records(urls[4])[-1][-1] == 'truncated_shard'


def test_tar_shard_resumes_at_the_same_sample_on_gs(copies):
  _, urls = copies
  iterator = iter(webdataset.TarShard(urls[3]))
  first = [next(iterator)['key'] for _ in range(3)]
  state = iterator.get_state()
  rest = [r['key'] for r in iterator]
  restored = iter(webdataset.TarShard(urls[3]))
  restored.set_state(state)
  assert [r['key'] for r in restored] == rest
  assert first + rest == [r[0] for r in _records(urls[3])]


def test_pipeline_delivers_the_same_batches_from_gs(copies):
  paths, urls = copies
  local, skipped = _epoch(paths)
  assert _epoch(urls) == (local, skipped)
  assert skipped['unreadable_shard'] == 1 and skipped['truncated_shard'] == 1
  assert set(range(18)) | {20, 21, 100, 101} == {n for n, _ in local}


def test_train_data_on_gs_patterns(copies):
  paths, urls = copies
  folder = urls[0].rsplit('/', 1)[0]
  assert shards.expand(f'{folder}/{{00000..00005}}.tar') == urls
  assert shards.expand(f'{folder}/0000[0-4].tar') == urls[:5]
  assert shards.missing(urls) == urls[-1:]
  config = {
    'name': 'webdataset',
    'shards': f'{folder}/{{00000..00002}}.tar',
    'image_size': 32,
    'randaugment': False,
    'random_erasing': 0.0,
    'context_length': 16,
    'shuffle_buffer': 7,
    'cycle_length': 2,
  }
  train_data.check_data_config(config)
  with pytest.raises(FileNotFoundError, match='1 of 6 shard files'):
    train_data.check_data_config({**config, 'shards': f'{folder}/{{00000..00005}}.tar'})
  batches = []
  for shard_paths in (urls[:3], paths[:3]):
    iterator = train_data.create_iterator({**config, 'shards': shard_paths}, 6, seed=1)
    batches.append([next(iterator) for _ in range(4)])  # past the 18 samples of one epoch
    iterator.close()
  for on_gs, local in zip(*batches):
    np.testing.assert_array_equal(on_gs['image'], local['image'])
    np.testing.assert_array_equal(on_gs['text'], local['text'])


def test_transient_failures_are_retried_and_the_shard_delivered(gcs, copies, monkeypatch):
  paths, urls = copies
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', FAST_RETRIES)
  gcs.clear_log()
  gcs.fail(_name(urls[0]), 503, times=3)
  assert _records(urls[0]) == _records(paths[0])
  assert [e['status'] for e in gcs.request_log(_name(urls[0]))] == [503] * 3 + [206]


def test_failures_part_way_are_retried(gcs, copies, monkeypatch):
  paths, urls = copies
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', FAST_RETRIES)
  monkeypatch.setattr(filesystem, 'SEQUENTIAL_BUFFER_SIZE', 4096)
  iterator = iter(webdataset.TarShard(urls[0]))
  records = [next(iterator)]
  gcs.clear_log()
  gcs.fail(_name(urls[0]), 500, times=3)
  records += list(iterator)
  assert [r['key'] for r in records] == [r[0] for r in _records(paths[0])]
  assert not any(r['skip'] for r in records)
  statuses = [e['status'] for e in gcs.request_log(_name(urls[0]))]
  assert statuses[:4] == [500] * 3 + [206] and len(statuses) > 4


def test_a_shard_that_always_fails_is_unreadable_in_bounded_time(gcs, copies, monkeypatch):
  _, urls = copies
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', FAST_RETRIES)
  gcs.clear_log()
  gcs.fail(_name(urls[1]), 503, times=None)
  start = time.time()
  assert _records(urls[1]) == [('', None, None, -1, 'unreadable_shard')]
  assert time.time() - start < 5
  assert len(gcs.request_log(_name(urls[1]))) == 1 + len(FAST_RETRIES)


def test_a_shard_failing_part_way_is_truncated_after_its_samples(gcs, copies, monkeypatch):
  _, urls = copies
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', FAST_RETRIES)
  monkeypatch.setattr(filesystem, 'SEQUENTIAL_BUFFER_SIZE', 4096)
  iterator = iter(webdataset.TarShard(urls[2]))
  first = next(iterator)
  gcs.clear_log()
  gcs.fail(_name(urls[2]), 503, times=None)
  rest = list(iterator)
  assert [e['status'] for e in gcs.request_log(_name(urls[2]))] == [503] * 4
  assert not first['skip'] and rest[-1]['skip'] == 'truncated_shard'
  assert all(not r['skip'] for r in rest[:-1]) and len(rest) < 6


@pytest.mark.parametrize('status', [403, 404])
def test_forbidden_or_missing_shards_are_not_retried(gcs, copies, monkeypatch, status):
  _, urls = copies
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', (10.0,) * 3)
  gcs.clear_log()
  gcs.fail(_name(urls[0]), status, times=None)
  start = time.time()
  assert _records(urls[0]) == [('', None, None, -1, 'unreadable_shard')]
  assert _records(urls[-1]) == [('', None, None, -1, 'unreadable_shard')]  # absent
  assert time.time() - start < 3
  assert len(gcs.request_log(_name(urls[0]))) == 1
  assert not gcs.request_log(_name(urls[-1]))  # its size was asked: 404, no download


def test_a_large_shard_is_read_in_a_few_large_requests(gcs, tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  samples = [
    (f'{i:06d}', {'jpg': rng.bytes(24_000), 'txt': b'a caption', 'json': b'{}'}) for i in range(250)
  ]  # 750 members, about 6 MiB
  local = str(tmp_path / 'large.tar')
  webdataset.write_shard(local, samples)
  url = gcs.url(f'data/{uuid.uuid4().hex}/large.tar')
  webdataset.write_shard(url, samples)  # written to gs:// directly
  assert filesystem.read_bytes(url) == filesystem.read_bytes(local)
  size = os.path.getsize(local)
  gcs.clear_log()
  assert _records(url) == _records(local)
  assert [e['range'] for e in gcs.request_log(_name(url))] == [(0, size)]
  monkeypatch.setattr(filesystem, 'SEQUENTIAL_BUFFER_SIZE', 2**20)
  gcs.clear_log()
  assert len(_records(url)) == len(samples)
  ranges = [e['range'] for e in gcs.request_log(_name(url))]
  assert len(ranges) <= size // 2**20 + 2
  assert all(stop - start >= 2**20 for start, stop in ranges[:-1])


def test_inspect_cli_reads_gs_and_writes_its_report_there(copies):
  _, urls = copies
  folder = urls[0].rsplit('/', 1)[0]
  report_url = f'{folder}/reports/inspect.json'
  result = cli.run(
    'input_pipeline.inspect',
    '--shards', f'{folder}/{{00000..00005}}.tar',
    '--batches', '3',
    '--batch_size', '4',
    '--no_deit',
    '--json', report_url,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(filesystem.read_text(report_url))
  assert report['shards'] == 6 and report['missing_shards'] == 1
  assert report['samples'] == 12 and report['examples']
  assert 'missing' in result.stderr
