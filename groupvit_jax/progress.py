"""Progress lines with rate and ETA: training steps, and long loops (evaluation, conversion).

No heavy imports here: every command-line tool uses it."""

import sys
import time
from typing import Callable, Mapping


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


def progress_line(step: int, total_steps: int, seconds_per_step: float, metrics: Mapping) -> str:
  """'step 120/500 (24%) | loss 8.412 | 65.3 samples/s | 1.96 s/step | ETA 12m25s'."""
  eta = format_duration(seconds_per_step * (total_steps - step))
  return (
    f'step {step}/{total_steps} ({100 * step // total_steps}%) | loss {metrics["loss"]:.4f} | '
    f'{metrics["samples_per_second"]:.1f} samples/s | {seconds_per_step:.3g} s/step | ETA {eta}'
  )


def format_duration(seconds: float) -> str:
  """ "1h05m" or "4m09s"."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'
