"""Token rows cut to the captions' length before the train step (`config.text_length_multiple`).

The text tower is causal and pools at the end-of-text (EOT) token, which has the largest id in
CLIP's vocabulary (49407), so a row's argmax finds it. The positions after a row's EOT change
neither its embedding nor any gradient, and the tower takes rows shorter than its context (the
positional embedding is sliced). So each global batch's token rows [B, 1 + K, L] are cut to the
longest EOT position + 1 over the whole global batch (all processes), rounded up to a multiple
of `text_length_multiple` and capped at L. The jitted step compiles once per length: with
multiple 16 and context 77 the lengths are 16, 32, 48, 64 and 77, at most 5 compiles.
"""

import jax
from absl import logging

from input_pipeline.text import bucket_length, text_length

# How long a process waits for the others' lengths of the same step (they arrive within a step
# unless a process is stuck, which jax.distributed's heartbeat reports sooner).
_TIMEOUT_MS = 30 * 60 * 1000
_KEY_PREFIX = 'groupvit_jax/text_length'


def bucket_lengths(multiple: int, context_length: int) -> list[int]:
  """Every length a batch can be cut to, so every shape the train step compiles for."""
  return sorted({bucket_length(n, multiple, context_length) for n in range(1, context_length + 1)})


def _process_max(value: int, step: int, written: list[str]) -> int:
  """The largest `value` of all processes at `step` (every process calls this once per step);
  `written` holds the key this process wrote last, which it deletes once it is read.

  Goes through jax.distributed's key-value store on the host, as orbax's barriers do, not
  through the devices: a device all-gather (multihost_utils.process_allgather) would queue
  behind the step in flight, so each step would wait for the previous one to finish.
  """
  if jax.process_count() == 1:
    return value
  from jax._src import distributed  # pylint: disable=g-import-not-at-top

  client = distributed.global_state.client
  prefix = f'{_KEY_PREFIX}/{step}'
  client.key_value_set(f'{prefix}/{jax.process_index()}', str(value))
  values = [
    int(client.blocking_key_value_get(f'{prefix}/{p}', _TIMEOUT_MS))
    for p in range(jax.process_count())
  ]
  # Every process has read this process's previous value before it wrote this step's own.
  for key in written:
    client.key_value_delete(key)
  written[:] = [f'{prefix}/{jax.process_index()}']
  return max(values)


class TextTrimmer:
  """Cuts each global batch's 'text' [b, 1 + K, L] (this process's rows) to the length of the
  longest text of the global batch, rounded up to `multiple` (0: never cuts)."""

  def __init__(self, multiple: int):
    self.multiple = multiple
    self.lengths = set()  # the lengths seen so far: one compile of the step each
    self._written = []  # this process's last key in jax.distributed's store

  def __call__(self, batch: dict, step: int) -> dict:
    """`batch` with its 'text' cut; `step` numbers the batch, the same on every process."""
    if not self.multiple:
      return batch
    tokens = batch['text']
    context = tokens.shape[-1]
    longest = _process_max(text_length(tokens), step, self._written)
    length = bucket_length(longest, self.multiple, context)
    if length not in self.lengths:
      self.lengths.add(length)
      logging.info(
        'step %d: texts of %d tokens (context %d), a new length: the step compiles for it '
        '(lengths possible: %s)',
        step + 1,
        length,
        context,
        bucket_lengths(self.multiple, context),
      )
    if length == context:
      return batch
    return dict(batch, text=tokens[..., :length])
