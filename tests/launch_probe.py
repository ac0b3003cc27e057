"""Stands in for the trainer in tests/test_launch.py: launch/slurm.sbatch runs it
(MODULE=launch_probe) in every task its stub srun starts. It writes what the task saw to
$LAUNCH_PROBE_OUT/process_$SLURM_PROCID.json.

By default it calls jax.distributed.initialize() with no arguments, as the trainer does, and
reports the process and device counts jax found from SLURM's variables, with one collective
across the processes. With LAUNCH_PROBE_MODE=wait_for_term it imports nothing heavy: it
writes ready_$SLURM_PROCID, then waits up to a minute for SIGTERM."""

import json
import os
import signal
import sys


def _write(name: str, record: dict) -> None:
  path = os.path.join(os.environ['LAUNCH_PROBE_OUT'], name)
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f)
  os.replace(path + '.tmp', path)


def _wait_for_term(rank: str) -> None:
  signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
  _write(f'ready_{rank}', {})
  received = signal.sigtimedwait([signal.SIGTERM], 60)
  _write(f'process_{rank}.json', {'argv': sys.argv[1:], 'sigterm': received is not None})


def _initialize(rank: str) -> None:
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize()
  ranks = multihost_utils.process_allgather(np.int32(jax.process_index()))
  _write(
    f'process_{rank}.json',
    {
      'argv': sys.argv[1:],
      'process_index': jax.process_index(),
      'process_count': jax.process_count(),
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'all_process_indices': np.asarray(ranks).tolist(),
    },
  )
  jax.distributed.shutdown()


if __name__ == '__main__':
  rank = os.environ['SLURM_PROCID']
  if os.environ.get('LAUNCH_PROBE_MODE') == 'wait_for_term':
    _wait_for_term(rank)
  else:
    _initialize(rank)
