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
from absl import logging
from jax.experimental import multihost_utils

from groupvit_jax import filesystem

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


def _this_process(saved: dict, step: int, directory) -> dict | None:
  """This process's data state from a checkpoint's, or None when the checkpoint was written by
  another number of processes reading their own shards (a resized slice): the model resumes at
  its step, the data iterators start a new order."""
  # Checkpoints written before the states of all processes were kept hold one dict.
  states = saved['processes'] if 'processes' in saved else [saved]
  if len(states) == jax.process_count():
    return states[jax.process_index()]
  if all(s == states[0] for s in states):  # e.g. synthetic data, whose state is the step
    return states[0]
  logging.warning(
    'the checkpoint at step %d in %s was written by %d processes and this run has %d: the '
    'weights resume, the data order starts anew (rerun with %d processes to keep it)',
    step,
    directory,
    len(states),
    jax.process_count(),
    len(states),
  )
  return None


def restore_latest(
  manager: ocp.CheckpointManager, state_shapes: Any, shardings: Any
) -> tuple[Any, dict] | None:
  """(state laid out with `shardings`, this process's data iterator state or None) of the
  latest step, or None."""
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
