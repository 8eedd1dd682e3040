"""Progress of long phases as log lines: how far, how long so far, how long still to go.

For phases that run inside training or evaluation (preprocessing an audio corpus, caching waveforms,
evaluating a test set), where a terminal progress bar would be lost in the log. At most one line per
`every` seconds, and one at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
  """'1h02m', '3m05s' or '12s'."""
  seconds = int(seconds)
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


class Progress:
  """Counts `total` items of a phase named `what` and logs `what: done/total (p%), elapsed, ETA`."""

  def __init__(
    self, what: str, total: int, log: Callable[[str], None], every: float = 10.0, unit: str = ''
  ):
    self.what, self.total, self.log, self.every = what, total, log, every
    self.unit = f' {unit}' if unit else ''
    self.done = 0
    self.start = self.last = time.monotonic()

  def update(self, n: int = 1) -> None:
    self.done += n
    now = time.monotonic()
    if now - self.last >= self.every or self.done >= self.total:
      self.last = now
      elapsed = now - self.start
      eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
      self.log(
        f'{self.what}: {self.done}/{self.total}{self.unit} '
        f'({100 * self.done / max(self.total, 1):.0f}%), {duration(elapsed)}'
        + (f', ETA {duration(eta)}' if self.done < self.total else '')
      )
