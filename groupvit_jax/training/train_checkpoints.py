"""The trainer's checkpoints: orbax, asynchronous, the last K kept, under WORKDIR/checkpoints.

Each checkpoint holds the whole TrainState (step, parameters, optimizer state, BatchNorm
statistics, RNG key) and every process's input iterator state (each process reads its own
shards), so a resumed run continues exactly as if it had never stopped. Orbax writes a step
into a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint as the latest one. On gs:// orbax marks a step complete with a commit file
instead of a rename (and reaches the bucket through etils.epath on fsspec, and tensorstore's
own GCS driver for the array data).
"""

import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from groupvit_jax import filesystem
from groupvit_jax.training import config_checks

CHECKPOINT_DIR = 'checkpoints'


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    filesystem.join(filesystem.abspath(workdir), CHECKPOINT_DIR),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=True, create=True
    ),
  )


def _every_process(data_state: dict) -> list[dict]:
  """The data states of all processes, in process order (every process must call this)."""
  if jax.process_count() == 1:
    return [data_state]
  encoded = np.frombuffer(json.dumps(data_state).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.int32(encoded.size))  # [processes]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[: encoded.size] = encoded
  rows = multihost_utils.process_allgather(padded)  # [processes, longest]
  return [json.loads(bytes(row[:length])) for row, length in zip(rows, lengths)]


def save(manager: ocp.CheckpointManager, state: Any, data_state: dict) -> None:
  """Starts writing `state` at its step in the background (wait_until_finished to block).
  Every process calls this with its own data state; process 0 writes them all."""
  manager.save(
    int(state.step),
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave({'processes': _every_process(dict(data_state))}),
    ),
    force=True,
  )


def _this_process(saved: dict, step: int, directory) -> dict:
  """This process's data state from a checkpoint's; a run resumes with as many processes as
  wrote it, unless their states are all alike (synthetic data: only the step)."""
  # Checkpoints written before the states of all processes were kept hold one dict.
  states = saved['processes'] if 'processes' in saved else [saved]
  if len(states) == jax.process_count():
    return states[jax.process_index()]
  if all(s == states[0] for s in states):
    return states[0]
  raise config_checks.ConfigError(
    f'the checkpoint at step {step} in {directory} was written by {len(states)} processes, each '
    f'reading its own shards; resume it with {len(states)} processes (this run has '
    f'{jax.process_count()}), or start a new workdir'
  )


def restore_latest(
  manager: ocp.CheckpointManager, state_shapes: Any, shardings: Any
) -> tuple[Any, dict] | None:
  """(state laid out with `shardings`, data iterator state) of the latest step, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  target = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_shapes, shardings
  )
  restored = manager.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()),
  )
  return restored['state'], _this_process(restored['data'], step, manager.directory)
