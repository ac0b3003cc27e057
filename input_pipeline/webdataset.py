"""img2dataset webdataset shards as grain datasets of raw samples, resumable at any sample.

A shard is a tar file whose members are grouped by key: `KEY.jpg` (or .jpeg, .png, .webp) with
its caption in `KEY.txt` and, optionally, `KEY.json`; members of one sample are consecutive, as
img2dataset writes them. `TarShard(path, position)` reads one shard as a `grain.IterDataset`
of records

  {'key': str, 'image': bytes | None, 'caption': bytes | None,
   'position': int, 'index': int, 'skip': str}

where (position, index) name the sample (the shard's position in the stream of shards and the
sample's place in the shard) and `skip` is '' or one of SKIP_REASONS for a shard that could not
be read. The iterator's state is the byte offset of the next sample, so restoring it costs one
seek, not a re-read. A shard may be a URL ('gs://...'): it is read with a few large ranged
requests (filesystem.open_sequential), transient errors retried.

Damage is never raised: a missing or unreadable file yields one record skipped as
'unreadable_shard'; a tar that breaks part way yields its whole samples, then one record
skipped as 'truncated_shard'.
"""

import io
import os
import tarfile
from typing import Any

import grain

from groupvit_jax import filesystem

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'gif', 'bmp', 'tif', 'tiff')
CAPTION_EXTENSION = 'txt'
# Why a sample or a shard was dropped; counted per reason in the trainer's metrics.
SKIP_REASONS = (
  'unreadable_shard',
  'truncated_shard',
  'missing_image',
  'missing_caption',
  'corrupt_image',
  'empty_image',
  'image_too_large',
  'unsupported_image',
  'empty_caption',
  'caption_not_utf8',
  'transform_error',
)
_BLOCK = 512  # tar block size; an archive ends with zero blocks


def split_name(name: str) -> tuple[str, str]:
  """(key, extension) of a member name, webdataset style: the key runs to the first dot of the
  file name ('dir/000123.jpg' -> ('dir/000123', 'jpg'))."""
  directory, base = os.path.split(name)
  stem, _, extension = base.partition('.')
  return os.path.join(directory, stem), extension.lower()


def skip_record(reason: str, position: int, index: int = -1, key: str = '') -> dict:
  """A record that carries only why it was dropped."""
  return {
    'key': key,
    'image': None,
    'caption': None,
    'position': position,
    'index': index,
    'skip': reason,
  }


class _TarShardIterator(grain.DatasetIterator):
  """Samples of one shard in file order; the state is the offset of the next one."""

  def __init__(self, path: str, position: int):
    super().__init__()
    self._path = path
    self._position = position
    self._offset = 0  # where the next sample's first member starts
    self._index = 0  # the next sample's index in the shard
    self._done = False
    self._file = None
    self._tar = None
    self._pending = None  # a member read ahead: the first of the next sample

  def _open(self) -> dict | None:
    """Opens the shard at the current offset; a skip record if it cannot be read."""
    try:
      self._file = filesystem.open_sequential(self._path)
      self._file.seek(self._offset)
      self._tar = tarfile.TarFile(fileobj=self._file, mode='r')
    except (OSError, tarfile.TarError, EOFError):
      self._finish()
      return skip_record('unreadable_shard', self._position)
    return None

  def _finish(self) -> None:
    self._done = True
    self._pending = None
    if self._file is not None:
      self._file.close()
    self._file = self._tar = None

  def _clean_end(self) -> bool:
    """Whether the archive ended with its zero block rather than being cut off."""
    self._file.seek(self._tar.offset)
    block = self._file.read(_BLOCK)
    return len(block) == _BLOCK and not any(block)

  def _next_member(self):
    """The next regular-file member, or None at the end of the archive."""
    while True:
      member = self._tar.next()
      if member is None or member.isfile():
        return member

  def __next__(self) -> dict:
    if self._done:
      raise StopIteration
    if self._tar is None:
      failed = self._open()
      if failed is not None:
        return failed
    try:
      member = self._pending or self._next_member()
      if member is None:
        clean = self._clean_end()
        self._finish()
        if clean:
          raise StopIteration
        return skip_record('truncated_shard', self._position, self._index)
      key = split_name(member.name)[0]
      record = {'key': key, 'image': None, 'caption': None}
      while member is not None:
        member_key, extension = split_name(member.name)
        if member_key != key:
          break
        # Other members (KEY.json) are passed over unread.
        if extension in IMAGE_EXTENSIONS:
          record['image'] = self._tar.extractfile(member).read()
        elif extension == CAPTION_EXTENSION:
          record['caption'] = self._tar.extractfile(member).read()
        member = self._next_member()
    except (OSError, tarfile.TarError, EOFError):
      self._finish()
      return skip_record('truncated_shard', self._position, self._index)
    self._pending = member
    if member is None:
      self._offset = self._tar.offset  # the end: a later restore finds no more samples
    else:
      self._offset = member.offset
    record.update(position=self._position, index=self._index, skip='')
    self._index += 1
    return record

  def get_state(self) -> dict[str, Any]:
    return {'offset': self._offset, 'index': self._index, 'done': int(self._done)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._finish()
    self._done = bool(state['done'])
    self._offset = int(state['offset'])
    self._index = int(state['index'])

  def close(self) -> None:
    self._finish()


class TarShard(grain.IterDataset):
  """One webdataset shard as raw sample records (see the module docstring)."""

  def __init__(self, path: str, position: int = 0):
    super().__init__()
    self.path = path
    self.position = position

  def __iter__(self) -> _TarShardIterator:
    return _TarShardIterator(self.path, self.position)

  def __str__(self) -> str:
    return f'TarShard({self.path!r}, position={self.position})'


def write_shard(path: str, samples: list[tuple[str, dict[str, bytes]]]) -> None:
  """Writes a webdataset shard (a path or URL): for each (key, {extension: data}), members
  KEY.extension."""
  with filesystem.open(path, 'wb') as f, tarfile.open(fileobj=f, mode='w') as tar:
    for key, members in samples:
      for extension, data in members.items():
        info = tarfile.TarInfo(f'{key}.{extension}')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
