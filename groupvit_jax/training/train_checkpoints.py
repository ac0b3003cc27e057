"""The trainer's checkpoints: orbax, asynchronous, the last K kept, under WORKDIR/checkpoints.

Each checkpoint holds the whole TrainState (step, parameters, optimizer state, BatchNorm
statistics, RNG key) and the input iterator's state, so a resumed run continues exactly as if it
had never stopped. Orbax writes a step into a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint as the latest one.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=True, create=True
    ),
  )


def save(manager: ocp.CheckpointManager, state: Any, data_state: dict) -> None:
  """Starts writing `state` at its step in the background (wait_until_finished to block)."""
  manager.save(
    int(state.step),
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
    ),
    force=True,
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
  return restored['state'], restored['data']
