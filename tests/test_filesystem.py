"""groupvit_jax.filesystem on local paths and on gs:// URLs (the local emulator): same answers."""

import io
import os
import time
import uuid

import numpy as np
import pytest

from groupvit_jax import filesystem

TEXT = 'naïve café, 東京 ✓\nsecond line\n'


@pytest.fixture(params=['local', 'gcs'])
def root(request, tmp_path):
  """An empty folder: a local directory, or a fresh prefix of the emulator's bucket."""
  if request.param == 'local':
    return str(tmp_path)
  return request.getfixturevalue('gcs').url(f'fs/{uuid.uuid4().hex}')


@pytest.fixture
def fast_retries(monkeypatch):
  monkeypatch.setattr(filesystem, 'RETRY_DELAYS_S', (0.01, 0.02, 0.04))


def test_is_url_has_magic_join_abspath():
  assert filesystem.is_url('gs://bucket/a.tar') and not filesystem.is_url('/data/a.tar')
  assert not filesystem.is_url('file:///data/a.tar') and not filesystem.is_url('runs/a')
  assert filesystem.has_magic('gs://b/*.tar') and filesystem.has_magic('a/0[0-4].tar')
  assert not filesystem.has_magic('gs://b/{00000..00009}.tar')
  assert filesystem.join('gs://bucket/runs', 'a', 'b.json') == 'gs://bucket/runs/a/b.json'
  assert filesystem.abspath('gs://bucket/x') == 'gs://bucket/x'
  assert filesystem.abspath('runs/a') == os.path.join(os.getcwd(), 'runs', 'a')
  assert filesystem.abspath('~/x') == os.path.join(os.path.expanduser('~'), 'x')


def test_text_is_utf8_and_bytes_round_trip(root):
  path = filesystem.join(root, 'deep', 'er', 'notes.txt')
  filesystem.write_text(path, TEXT)
  assert filesystem.read_text(path) == TEXT
  assert filesystem.read_bytes(path) == TEXT.encode('utf-8')
  with filesystem.open(path, 'r') as f:
    assert f.encoding.lower().replace('-', '') == 'utf8' and f.read() == TEXT
  data = bytes(range(256)) * 3
  filesystem.write_bytes(filesystem.join(root, 'blob.bin'), data)
  assert filesystem.read_bytes(filesystem.join(root, 'blob.bin')) == data
  with filesystem.open(filesystem.join(root, 'w.txt'), 'w') as f:
    f.write(TEXT)
  with filesystem.open(filesystem.join(root, 'w.txt')) as f:  # 'rb' by default
    assert f.read() == TEXT.encode('utf-8')


def test_exists_isfile_isdir_listdir_makedirs(root):
  filesystem.makedirs(filesystem.join(root, 'd'))
  filesystem.write_text(filesystem.join(root, 'd', 'b.txt'), 'b')
  filesystem.write_text(filesystem.join(root, 'd', 'a.txt'), 'a')
  filesystem.write_text(filesystem.join(root, 'd', 'sub', 'c.txt'), 'c')
  assert filesystem.listdir(filesystem.join(root, 'd')) == ['a.txt', 'b.txt', 'sub']
  assert filesystem.exists(filesystem.join(root, 'd', 'a.txt'))
  assert filesystem.isfile(filesystem.join(root, 'd', 'a.txt'))
  assert not filesystem.isdir(filesystem.join(root, 'd', 'a.txt'))
  assert filesystem.isdir(filesystem.join(root, 'd', 'sub'))
  assert not filesystem.isfile(filesystem.join(root, 'd', 'sub'))
  assert not filesystem.exists(filesystem.join(root, 'd', 'absent.txt'))
  assert not filesystem.isfile(filesystem.join(root, 'absent', 'x'))
  assert not filesystem.isdir(filesystem.join(root, 'absent'))


def test_glob_gives_sorted_paths_of_the_same_kind(root):
  for name in ('01.tar', '00.tar', '10.tar', 'x.txt', 'sub/02.tar'):
    filesystem.write_bytes(filesystem.join(root, name), b'x')
  found = filesystem.glob(filesystem.join(root, '*.tar'))
  assert found == [filesystem.join(root, n) for n in ('00.tar', '01.tar', '10.tar')]
  assert filesystem.glob(filesystem.join(root, '0[1-9].tar')) == [filesystem.join(root, '01.tar')]
  assert filesystem.glob(filesystem.join(root, 'nothing*')) == []


def test_remove_and_rmtree(root):
  for name in ('keep.txt', 'gone.txt', 'tree/a.txt', 'tree/b/c.txt'):
    filesystem.write_text(filesystem.join(root, name), name)
  filesystem.remove(filesystem.join(root, 'gone.txt'))
  filesystem.rmtree(filesystem.join(root, 'tree'))
  filesystem.rmtree(filesystem.join(root, 'never-was'))
  assert filesystem.listdir(root) == ['keep.txt']
  with pytest.raises(FileNotFoundError):
    filesystem.remove(filesystem.join(root, 'gone.txt'))


def test_are_files_answers_as_isfile(root, monkeypatch):
  names = [f'{i:05d}.tar' for i in range(12)]
  for name in names[:10]:
    filesystem.write_bytes(filesystem.join(root, 'many', name), b'x')
  filesystem.write_bytes(filesystem.join(root, 'many', names[10], 'inside'), b'a folder')
  filesystem.write_bytes(filesystem.join(root, 'few.tar'), b'x')
  paths = [filesystem.join(root, 'many', n) for n in names]
  paths += [filesystem.join(root, 'few.tar'), filesystem.join(root, 'none', 'a.tar')]
  paths += [filesystem.join(root, 'empty', n) for n in names]
  expected = [filesystem.isfile(p) for p in paths]
  assert expected == [True] * 10 + [False, False, True, False] + [False] * 12
  asked = []
  isfile = filesystem.isfile
  monkeypatch.setattr(filesystem, 'isfile', lambda p: asked.append(p) or isfile(p))
  assert filesystem.are_files(paths) == expected
  if filesystem.is_url(root):  # the folders of 12 take one listing each, not 12 requests
    assert asked == paths[12:14]


def test_open_sequential_reads_and_seeks_like_a_file(root):
  data = np.random.default_rng(0).bytes(3 * 2**20 + 123)
  path = filesystem.join(root, 'big.bin')
  filesystem.write_bytes(path, data)
  with filesystem.open_sequential(path, buffer_size=2**20) as f:
    assert f.read(10) == data[:10] and f.tell() == 10
    f.seek(1_500_000)
    assert f.read(5000) == data[1_500_000:1_505_000]
    f.seek(-100, io.SEEK_END)
    assert f.read() == data[-100:] and f.read(10) == b''
    f.seek(20)
    assert f.read() == data[20:]


def test_open_sequential_fetches_a_few_large_ranges(gcs):
  data = np.random.default_rng(1).bytes(5 * 2**20)
  path = gcs.url(f'fs/{uuid.uuid4().hex}.bin')
  filesystem.write_bytes(path, data)
  gcs.clear_log()
  with filesystem.open_sequential(path, buffer_size=2**20) as f:
    chunks = iter(lambda: f.read(1000), b'')
    assert b''.join(chunks) == data
  ranges = [entry['range'] for entry in gcs.request_log(path.split('/', 3)[3])]
  assert ranges == [(i * 2**20, (i + 1) * 2**20) for i in range(5)]


def test_missing_object_fails_at_once(gcs):
  start = time.time()
  with pytest.raises(FileNotFoundError):
    filesystem.open_sequential(gcs.url('fs/absent.bin'), retry_delays=[5.0] * 3)
  assert time.time() - start < 3


@pytest.mark.parametrize('status', [408, 429, 500, 502, 503, 504])
def test_transient_errors_are_retried(gcs, fast_retries, status):
  name = f'fs/{uuid.uuid4().hex}.bin'
  filesystem.write_bytes(gcs.url(name), b'payload')
  gcs.clear_log()
  gcs.fail(name, status, times=3)
  with filesystem.open_sequential(gcs.url(name)) as f:
    assert f.read() == b'payload'
  assert [e['status'] for e in gcs.request_log(name)] == [status] * 3 + [206]


@pytest.mark.parametrize('status', [403, 404])
def test_permanent_errors_are_not_retried(gcs, status):
  name = f'fs/{uuid.uuid4().hex}.bin'
  filesystem.write_bytes(gcs.url(name), b'payload')
  gcs.clear_log()
  gcs.fail(name, status, times=None)
  start = time.time()
  with pytest.raises(OSError):
    with filesystem.open_sequential(gcs.url(name), retry_delays=[5.0] * 3) as f:
      f.read()
  assert time.time() - start < 3
  assert [e['status'] for e in gcs.request_log(name)] == [status]


def test_a_request_that_keeps_failing_gives_up_after_the_schedule(gcs, fast_retries):
  name = f'fs/{uuid.uuid4().hex}.bin'
  filesystem.write_bytes(gcs.url(name), b'payload')
  gcs.clear_log()
  gcs.fail(name, 503, times=None)
  with filesystem.open_sequential(gcs.url(name)) as f:
    with pytest.raises(OSError, match='503'):
      f.read()
  assert len(gcs.request_log(name)) == 1 + len(filesystem.RETRY_DELAYS_S)


def test_is_transient():
  import gcsfs.retry  # pylint: disable=g-import-not-at-top

  assert filesystem.is_transient(TimeoutError()) and filesystem.is_transient(ConnectionResetError())
  assert filesystem.is_transient(gcsfs.retry.HttpError({'code': 503, 'message': 'busy'}))
  assert filesystem.is_transient(gcsfs.retry.HttpError({'code': 429, 'message': 'slow down'}))
  assert not filesystem.is_transient(gcsfs.retry.HttpError({'code': 403, 'message': 'no'}))
  assert not filesystem.is_transient(FileNotFoundError('gs://b/x'))
  assert not filesystem.is_transient(ValueError('Bad Request'))
