"""A JAX profiler trace of chosen training steps, for TensorBoard's profile plugin.

`config.profile_steps = (first, last)` traces steps first..last (inclusive, numbered as the log
numbers them: step 1 is the first batch) on process 0, into WORKDIR/tensorboard/plugins/profile,
where `tensorboard --logdir WORKDIR/tensorboard` (with the tensorboard-plugin-profile package)
shows it. Pick steps after the first, which compiles. The trace is written by the profiler's own
file system (TensorFlow's, built into jaxlib), which knows local paths and gs:// natively.
"""

from typing import Sequence

import jax
from absl import logging


def check_steps(steps: Sequence[int]) -> tuple[int, int] | None:
  """(first, last) of a `config.profile_steps` value, None for () or None; ValueError else."""
  if steps is None or len(steps) == 0:
    return None
  if (
    len(steps) != 2
    or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
    or not 1 <= steps[0] <= steps[1]
  ):
    raise ValueError(
      f'config.profile_steps must be (first, last) with 1 <= first <= last, or (); got {steps!r}'
    )
  return steps[0], steps[1]


class StepTrace:
  """Starts the profiler before step `first` runs and stops it once step `last` is done."""

  def __init__(self, steps: Sequence[int] | None, directory: str):
    self.steps = check_steps(steps) if jax.process_index() == 0 else None
    self.directory = directory
    self.active = False

  def before_step(self, step: int) -> None:
    """Called with the number of the step about to run."""
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after_step(self, step: int, outputs) -> None:
    """Called with the step just dispatched and its outputs, which the trace waits for."""
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)
      self.stop()
      logging.info('wrote a profile of steps %d-%d to %s', *self.steps, self.directory)

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
