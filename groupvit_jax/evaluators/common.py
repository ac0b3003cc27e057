"""What every evaluator shares: its process's share of a split, sums over processes, batches.

With several processes (multi-host training), each evaluates `process_share` of the split and
the counts (confusion matrices, correct predictions) are summed with `process_sum`, so the
result equals one process's evaluation of the whole split and no two hosts do the same work.
Every process must call `process_sum` the same number of times.
"""

from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np


def process_share(items: Sequence) -> Sequence:
  """This process's items of a split: positions p, p + n, ... for process p of n."""
  return items[jax.process_index() :: jax.process_count()]


def process_sum(counts: Any) -> Any:
  """`counts` (a pytree of NumPy integer arrays) summed over all processes."""
  if jax.process_count() == 1:
    return counts
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  gathered = multihost_utils.process_allgather(counts)  # each leaf: [processes, ...]
  return jax.tree.map(lambda x: np.asarray(x).sum(axis=0), gathered)


def batches(examples: Iterable[tuple], batch_size: int) -> Iterator[list[tuple]]:
  """Lists of at most `batch_size` consecutive examples whose first element (the image) has
  one shape, so that each list stacks into one model call."""
  batch = []
  for example in examples:
    if batch and (len(batch) == batch_size or np.shape(example[0]) != np.shape(batch[0][0])):
      yield batch
      batch = []
    batch.append(example)
  if batch:
    yield batch
