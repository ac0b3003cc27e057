"""Every file the project reads or writes goes through here, local paths and URLs alike.

A path is either local ('/data/cc12m/00000.tar', 'runs/a') or a URL that fsspec knows
('gs://bucket/cc12m/00000.tar'); Cloud Storage goes through gcsfs. Local paths take Python's
own file functions (fast, no extra layer); URLs take fsspec's, so the code that serves a real
bucket is the code the tests run against a local emulator (STORAGE_EMULATOR_HOST).

Orbax reaches paths through etils.epath, which would use TensorFlow's gfile when TensorFlow is
importable; EPATH_USE_TF=false (set here unless the user set it) puts it on fsspec too, so
one file-system layer serves everything but the array bytes tensorstore writes itself.

Object stores have no directories and no cheap renames: `makedirs` is a no-op there, and
nothing here renames a remote object. Remote listings are not cached, as other processes
(other hosts, tensorstore) write the same bucket.

`open_sequential` reads a large object front to back in a few large ranged reads, retrying
transient errors (`is_transient`) itself.
"""

import builtins
import collections
import io
import json
import os
import random
import shutil
import sys
import time
from typing import IO, Any, Sequence

os.environ.setdefault('EPATH_USE_TF', 'false')

# open_sequential: bytes fetched per request, the limit on one request, and the waits before
# each retry of a request that failed transiently (each stretched by 0.5x to 1.5x at random):
# with these, a request that always fails gives up after 7 tries and 16 to 48 s of waiting.
SEQUENTIAL_BUFFER_SIZE = 16 * 2**20
REQUEST_TIMEOUT_S = 120.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# are_files lists a URL's folder once instead of asking about each of at least this many files.
_LIST_FOLDER_FROM = 8


def is_url(path: str) -> bool:
  """Whether `path` names a remote object ('gs://...') rather than a local file."""
  return '://' in str(path) and not str(path).startswith('file://')


def _remote(path: str):
  """(fsspec file system, path without the protocol) of a URL."""
  import fsspec  # pylint: disable=g-import-not-at-top

  return fsspec.core.url_to_fs(path, use_listings_cache=False)


def join(*parts: str) -> str:
  return os.path.join(*parts)


def abspath(path: str) -> str:
  """An absolute local path; URLs are returned as they are."""
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def open(path: str, mode: str = 'rb', **kwargs) -> IO[Any]:  # pylint: disable=redefined-builtin
  """A file object, as the builtin `open` (text modes decode UTF-8 unless told otherwise)."""
  if 'b' not in mode:
    kwargs.setdefault('encoding', 'utf-8')
  if not is_url(path):
    return builtins.open(path, mode, **kwargs)
  fs, name = _remote(path)
  return fs.open(name, mode, **kwargs)


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  fs, name = _remote(path)
  return fs.exists(name)


def isfile(path: str) -> bool:
  if not is_url(path):
    return os.path.isfile(path)
  fs, name = _remote(path)
  return fs.isfile(name)


def are_files(paths: Sequence[str]) -> list[bool]:
  """`isfile` of each path; URLs that share a folder take one listing of it, not a request each."""
  by_folder = collections.defaultdict(list)
  for path in paths:
    if is_url(path):
      by_folder[path.rsplit('/', 1)[0]].append(path)
  known = {}
  for folder, group in by_folder.items():
    if len(group) >= _LIST_FOLDER_FROM:
      names = _file_names(folder)
      known.update((path, path.rsplit('/', 1)[1] in names) for path in group)
  return [known[path] if path in known else isfile(path) for path in paths]


def _file_names(folder: str) -> set[str]:
  """The names of the objects directly under URL `folder` (none if there are none)."""
  fs, name = _remote(folder)
  try:
    entries = fs.ls(name, detail=True)
  except FileNotFoundError:
    return set()
  return {os.path.basename(e['name']) for e in entries if e['type'] == 'file'}


def isdir(path: str) -> bool:
  """Whether `path` is a directory; on an object store, whether any object lies under it."""
  if not is_url(path):
    return os.path.isdir(path)
  fs, name = _remote(path)
  return fs.isdir(name)


def makedirs(path: str) -> None:
  """Creates a local directory and its parents (existing is fine); a no-op for URLs."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """The names (not paths) of the entries directly under `path`, sorted."""
  if not is_url(path):
    return sorted(os.listdir(path))
  fs, name = _remote(path)
  return sorted(os.path.basename(p.rstrip('/')) for p in fs.ls(name, detail=False))


def glob(pattern: str) -> list[str]:
  """The paths (URLs for a URL pattern) matching a shell pattern, sorted."""
  if not is_url(pattern):
    import glob as glob_lib  # pylint: disable=g-import-not-at-top

    return sorted(glob_lib.glob(pattern))
  fs, name = _remote(pattern)
  return sorted(fs.unstrip_protocol(p) for p in fs.glob(name))


def has_magic(pattern: str) -> bool:
  """Whether `pattern` has shell wildcards ('*', '?', '[...]')."""
  return any(c in pattern for c in '*?[')


def remove(path: str) -> None:
  if not is_url(path):
    os.remove(path)
    return
  fs, name = _remote(path)
  fs.rm_file(name)


def rmtree(path: str) -> None:
  """Deletes a directory and everything under it; a missing one is fine."""
  if not is_url(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  fs, name = _remote(path)
  if fs.exists(name):
    fs.rm(name, recursive=True)


def read_text(path: str) -> str:
  with open(path, 'r') as f:
    return f.read()


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` whole (see write_bytes)."""
  write_bytes(path, text.encode('utf-8'))


def read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` so that readers see the old file or the new one, never a part:
  a local file is written beside and renamed over (parents made as needed); an object is
  replaced whole when its upload completes."""
  if is_url(path):
    with open(path, 'wb') as f:
      f.write(data)
    return
  directory = os.path.dirname(path) or '.'
  makedirs(directory)
  partial = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.partial')
  with open(partial, 'wb') as f:
    f.write(data)
  os.replace(partial, path)


def is_transient(error: BaseException) -> bool:
  """Whether a failed request may succeed when tried again: a time-out, a lost connection, or
  what gcsfs retries (HTTP 408, 429 and 5xx, aiohttp errors); not a missing (404) or forbidden
  (403) object."""
  if isinstance(error, (TimeoutError, ConnectionError)):
    return True
  gcsfs_retry = sys.modules.get('gcsfs.retry')
  return gcsfs_retry is not None and gcsfs_retry.is_retriable(error)


def open_sequential(
  path: str,
  buffer_size: int | None = None,
  retry_delays: Sequence[float] | None = None,
) -> IO[bytes]:
  """A read-only, seekable binary file for reading `path` mostly front to back (a tar).

  For a URL, reads fetch `buffer_size` (None: SEQUENTIAL_BUFFER_SIZE) bytes at a time with one
  ranged GET, so small reads and short seeks are served from memory; each request (and the size
  asked at opening) is tried once more after each of `retry_delays` (None: RETRY_DELAYS_S)
  seconds, jittered, while it fails transiently (`is_transient`), and at most REQUEST_TIMEOUT_S
  each. Errors are OSErrors: a missing object raises FileNotFoundError when opened, untried
  again. A local path opens as `open` does.
  """
  if not is_url(path):
    return builtins.open(path, 'rb')
  delays = RETRY_DELAYS_S if retry_delays is None else tuple(retry_delays)
  return io.BufferedReader(_RangeReader(path, delays), buffer_size or SEQUENTIAL_BUFFER_SIZE)


def _single_requests(path: str):
  """(size(), read(start, stop)) of the object at URL `path`, each one request.

  gcsfs retries a failing request six times over about 30 s by itself, which open_sequential's
  retries would multiply; its request coroutine without that loop is `_request.__wrapped__`.
  """
  fs, name = _remote(path)
  request = getattr(getattr(type(fs), '_request', None), '__wrapped__', None)
  if request is None:  # another fsspec file system: its own calls
    return (lambda: fs.size(name)), (lambda start, stop: fs.cat_file(name, start, stop))
  import fsspec  # pylint: disable=g-import-not-at-top

  def get(url: str, *args, headers=None) -> bytes:
    async def call():
      return (await request(fs, 'GET', url, *args, headers=headers))[3]

    return fsspec.asyn.sync(fs.loop, call, timeout=REQUEST_TIMEOUT_S)

  bucket, key, _ = fs.split_path(name)
  media = fs.url(name)
  return (
    lambda: int(json.loads(get('b/{}/o/{}', bucket, key))['size']),
    lambda start, stop: get(media, headers={'Range': f'bytes={start}-{stop - 1}'}),
  )


class _RangeReader(io.RawIOBase):
  """The bytes of a remote object, by ranged requests retried on transient errors."""

  def __init__(self, path: str, retry_delays: Sequence[float]):
    super().__init__()
    self._path = path
    self._delays = retry_delays
    size, self._read = _single_requests(path)
    self._size = self._retrying(size)
    self._position = 0

  def _retrying(self, request, *args):
    for delay in (*self._delays, None):
      try:
        return request(*args)
      except Exception as error:  # pylint: disable=broad-except  # sorted by is_transient
        if delay is not None and is_transient(error):
          time.sleep(delay * random.uniform(0.5, 1.5))
          continue
        if isinstance(error, OSError):
          raise
        raise OSError(f'reading {self._path}: {error!r}') from error

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def tell(self) -> int:
    return self._position

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
    if base + offset < 0:
      raise OSError(f'negative seek position in {self._path}')
    self._position = base + offset
    return self._position

  def readinto(self, buffer) -> int:
    stop = min(self._position + len(buffer), self._size)
    if stop <= self._position:
      return 0
    data = self._retrying(self._read, self._position, stop)
    buffer[: len(data)] = data
    self._position += len(data)
    return len(data)

  def readall(self) -> bytes:
    return self.read(max(0, self._size - self._position))
