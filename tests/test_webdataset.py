"""Webdataset shards through the grain pipeline: damage counts, order, hosts and resume."""

import collections
import json
import os

import numpy as np
import pytest

from input_pipeline import failures, image_transforms, web_pipeline, webdataset
from tests import shard_fixtures as fx

# Crop and flip only, so solid-colour samples stay solid and name themselves.
PLAIN = web_pipeline.PipelineConfig(
  transform=image_transforms.TransformConfig(image_size=32, randaugment=False, random_erasing=0.0),
  context_length=16,
  shuffle_buffer=7,
  cycle_length=2,
)


def _numbers(batch) -> list[int]:
  return [fx.number_of(image) for image in batch['image']]


def _run(paths, batch_size=4, seed=0, config=PLAIN, **kwargs):
  """Every batch of one epoch: (sample numbers in order, skip counts by reason)."""
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths, batch_size, seed, config, num_epochs=1, **kwargs)
  )
  numbers = [n for batch in iterator for n in _numbers(batch)]
  return numbers, {k: v for k, v in iterator.skipped.items() if v}


@pytest.fixture(scope='module')
def damaged(tmp_path_factory):
  """Two good shards (samples 0..9), a shard mixing good samples (10..17), awkward formats and
  every damaged kind, a truncated shard, a shard of garbage and a missing file."""
  directory = str(tmp_path_factory.mktemp('damaged'))
  paths = fx.write_good_shards(directory, 2, 5)
  samples, number = [], 10
  for name, (members, _) in fx.damaged_samples().items():
    samples.append((name, members))
    samples.append((f'good{number}', {'jpg': fx.solid_jpeg(number), 'txt': b'a red ball'}))
    number += 1
  for name, (data, _) in fx.image_variants().items():
    samples.append((name, {'png': data, 'txt': f'a {name} image'.encode()}))
  mixed = os.path.join(directory, 'mixed.tar')
  webdataset.write_shard(mixed, samples)
  truncated = fx.write_good_shards(os.path.join(directory, 't'), 1, 4, start=100)[0]
  # Cut inside the third sample's image: samples 100 and 101 survive.
  fx.truncate(truncated, fx.member_offsets(truncated)[7] + 600)
  garbage = os.path.join(directory, 'garbage.tar')
  with open(garbage, 'wb') as f:
    f.write(os.urandom(3000))
  missing = os.path.join(directory, 'missing.tar')
  return paths + [mixed, truncated, garbage, missing]


def test_damage_is_skipped_and_counted_exactly(damaged):
  numbers, skipped = _run(damaged)
  expected = collections.Counter(reason for _, reason in fx.damaged_samples().values())
  expected.update(truncated_shard=1, unreadable_shard=2)
  assert skipped == dict(expected)
  # 18 solid samples, 2 from the truncated shard and the awkward formats, each once.
  assert len(numbers) == 18 + 2 + len(fx.image_variants())
  assert set(range(18)) | {100, 101} <= set(numbers)


def test_awkward_formats_decode_to_their_colours():
  for name, (data, rgb) in fx.image_variants().items():
    pixels = np.asarray(image_transforms.decode(data))
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 40, 3), name
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(0), rgb, atol=3, err_msg=name)


def test_same_seed_same_batches_other_seed_other_order(damaged):
  first, _ = _run(damaged[:3], seed=5)
  again, _ = _run(damaged[:3], seed=5)
  other, _ = _run(damaged[:3], seed=6)
  assert first == again
  assert sorted(first) == sorted(other) and first != other


@pytest.mark.parametrize('hosts', [2, 3])
def test_hosts_read_disjoint_shards_covering_the_epoch(tmp_path, hosts):
  paths = fx.write_good_shards(str(tmp_path), 7, 3)
  per_host = [_run(paths, seed=1, process_index=p, process_count=hosts)[0] for p in range(hosts)]
  seen = [n for numbers in per_host for n in numbers]
  assert sorted(seen) == list(range(21))  # each sample once over all hosts
  shards_of = [{n // 3 for n in numbers} for numbers in per_host]
  for a in range(hosts):
    for b in range(a + 1, hosts):
      assert not shards_of[a] & shards_of[b]


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize('workers', [0, 2])
def test_restored_iterator_continues_exactly(tmp_path, workers):
  paths = fx.write_good_shards(str(tmp_path), 4, 6)
  config = web_pipeline.PipelineConfig(
    transform=image_transforms.TransformConfig(image_size=32),  # the full DeiT set
    context_length=16,
    shuffle_buffer=10,
    cycle_length=2,
    workers=workers,
  )

  def fresh():
    return web_pipeline.WebDatasetIterator(web_pipeline.build(paths, 3, 0, config))

  reference = fresh()
  expected = _batches(reference, 14)  # more than one epoch of 24 samples
  reference.close()
  interrupted = fresh()
  _batches(interrupted, 5)
  state = json.loads(json.dumps(interrupted.get_state()))  # as the trainer's checkpoint does
  interrupted.close()
  resumed = fresh()
  resumed.set_state(state)
  for want, got in zip(expected[5:], _batches(resumed, 9)):
    np.testing.assert_array_equal(want['image'], got['image'])
    np.testing.assert_array_equal(want['text'], got['text'])
  resumed.close()


def test_nothing_readable_stops_with_a_clear_error(tmp_path):
  garbage = tmp_path / 'garbage.tar'
  garbage.write_bytes(b'\0' * 10 + os.urandom(2000))
  iterator = web_pipeline.WebDatasetIterator(web_pipeline.build([str(garbage)], 4, 0, PLAIN))
  with pytest.raises(failures.NothingReadable, match='unreadable_shard'):
    next(iterator)


def test_tar_shard_state_is_a_byte_offset(tmp_path):
  path = fx.write_good_shards(str(tmp_path), 1, 5)[0]
  iterator = iter(webdataset.TarShard(path, position=3))
  first = [next(iterator) for _ in range(2)]
  assert [r['index'] for r in first] == [0, 1] and first[0]['position'] == 3
  state = iterator.get_state()
  assert state['offset'] == fx.member_offsets(path)[6]  # sample 2's first member
  rest = list(iterator)
  again = iter(webdataset.TarShard(path, position=3))
  again.set_state(state)
  assert (
    [r['key'] for r in again] == [r['key'] for r in rest] == ['000000002', '000000003', '000000004']
  )


def test_one_broken_shard_among_few_is_not_nothing_readable(tmp_path):
  # Three shards, three workers: in every epoch one worker's only shard is the broken one.
  paths = fx.write_good_shards(str(tmp_path), 2, 4)
  broken = tmp_path / 'broken.tar'
  broken.write_bytes(b'<html>404</html>')
  config = web_pipeline.PipelineConfig(
    transform=PLAIN.transform, context_length=16, shuffle_buffer=4, workers=3
  )
  iterator = web_pipeline.WebDatasetIterator(
    web_pipeline.build(paths + [str(broken)], 4, 0, config)
  )
  assert len(_batches(iterator, 4)) == 4
  iterator.close()
