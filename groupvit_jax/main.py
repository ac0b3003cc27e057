"""Trains GroupViT: `python -m groupvit_jax.main --config=configs/synthetic_tiny.py --workdir=DIR`.

Any config value can be overridden, e.g. `--config.batch_size=1024 --config.total_steps=100`.
Rerunning the same command resumes from the latest checkpoint in the workdir.
"""

import logging as logging_std
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from input_pipeline import failures

FLAGS = flags.FLAGS
flags.DEFINE_string(
  'workdir', None, 'Directory or gs:// URL for checkpoints, metrics, TensorBoard and pictures.'
)
flags.DEFINE_bool(
  'distributed',
  False,
  'Join a multi-process run: jax.distributed.initialize() finds the peers on a Cloud TPU VM, '
  'under SLURM or Open MPI, or from the three flags below.',
)
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (implies --distributed).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (implies --distributed).')
flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')
flags.DEFINE_integer(
  'heartbeat_timeout_seconds',
  100,
  'A process that stops answering (killed, crashed host) ends every other one after this long.',
)
config_flags.DEFINE_config_file(
  'config', 'configs/synthetic_tiny.py', 'Experiment config file.', lock_config=True
)
flags.mark_flags_as_required(['workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a one-line error for a config override naming an unknown key."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    sys.exit(f'error: {error}\nPass --helpfull to see all flags.')
  except (AttributeError, KeyError) as error:
    message = str(error).strip('\'"').replace('\\n', ' ').replace('\\', '')
    sys.exit(f'error: unknown config key in an override: {message}')


class _QuietLibraries(logging_std.Filter):
  """Drops orbax's INFO lines (dozens per checkpoint); its warnings and errors still show."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno > logging_std.INFO or f'{os.sep}orbax{os.sep}' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # JAX and the trainer load after the flags parse, so that --help and flag errors are quick.
  import jax  # pylint: disable=g-import-not-at-top

  from groupvit_jax.training import config_checks, train  # pylint: disable=g-import-not-at-top

  logging.get_absl_handler().addFilter(_QuietLibraries())
  by_hand = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.distributed or any(v is not None for v in by_hand):
    # CPU processes reduce over gloo (TPU and GPU devices use their own interconnects).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(*by_hand, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
  logging.info(
    'JAX process %d of %d, devices: %s', jax.process_index(), jax.process_count(), jax.devices()
  )
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (
    config_checks.ConfigError,
    FileNotFoundError,
    FloatingPointError,
    failures.DataError,
  ) as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
