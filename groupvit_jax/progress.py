"""A progress line with rate and ETA for long loops (evaluation, conversion)."""

import sys
import time
from typing import Callable

from groupvit_jax.metric_writers import format_duration


class Progress:
  """Counts finished items and prints 'what: 120/1449 images (8%) | 3.1 images/s | ETA 7m09s'
  at most every `every` seconds, and once more at the end."""

  def __init__(
    self,
    total: int | None,
    what: str = '',
    unit: str = 'images',
    every: float = 2.0,
    log: Callable[[str], None] | None = None,
  ):
    self.total, self.what, self.unit, self.every = total, what, unit, every
    self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    self.done = self.logged = 0
    self.start = self.last = time.time()

  def line(self) -> str:
    elapsed = max(time.time() - self.start, 1e-9)
    rate = self.done / elapsed
    prefix = f'{self.what}: ' if self.what else ''
    if self.total:
      eta = format_duration((self.total - self.done) / rate) if rate else '?'
      return (
        f'{prefix}{self.done}/{self.total} {self.unit} ({100 * self.done // self.total}%) | '
        f'{rate:.2f} {self.unit}/s | ETA {eta}'
      )
    return f'{prefix}{self.done} {self.unit} | {rate:.2f} {self.unit}/s'

  def update(self, count: int = 1) -> None:
    self.done += count
    now = time.time()
    if now - self.last >= self.every:
      self.last, self.logged = now, self.done
      self.log(self.line())

  def finish(self) -> float:
    """Prints the final line (unless just printed); returns the seconds taken."""
    if self.logged != self.done or not self.done:
      self.log(self.line())
    return time.time() - self.start
