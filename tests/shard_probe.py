"""The trainer (`groupvit_jax.main`, same flags) with one addition for tests: every webdataset
shard a process opens is appended, as `path position`, to $SHARD_PROBE_OUT/process_<index>.txt,
so a test sees which shards each of several real processes read."""

import os

from absl import app

from groupvit_jax import main
from input_pipeline import webdataset


def _recording(iterate):
  def __iter__(shard):
    import jax  # pylint: disable=g-import-not-at-top

    path = os.path.join(os.environ['SHARD_PROBE_OUT'], f'process_{jax.process_index()}.txt')
    with open(path, 'a') as f:
      f.write(f'{shard.path} {shard.position}\n')
    return iterate(shard)

  return __iter__


if __name__ == '__main__':
  webdataset.TarShard.__iter__ = _recording(webdataset.TarShard.__iter__)
  app.run(main.main, flags_parser=main.parse_flags)
