"""Batches -> the loop's program: each call's global batches, placed on the devices one call ahead.

The loop dispatches a call (k steps: `config.steps_per_call`) and, while the devices run it, the host
draws, augments and places the next call's batches here: the host's work hides behind the step
instead of following it. A call is k batches of one shape stacked on a leading axis, starting at a
multiple of k; where they cannot be (a resume at another step, the run's last steps, the multi-scale
trainers' stretched lengths that differ from batch to batch) its steps go one at a time, so the loop's
program is compiled for k and for 1 steps at most, per shape.

Each call carries the data iterator's position after its last batch: a checkpoint after the call
saves that position, not the iterator's own (which is one call further on), so a resume sees exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from skipvqvc_jax.training import sharding


@dataclasses.dataclass
class Call:
  """One call of the loop's program: `steps` global batches stacked on a leading axis."""

  batches: dict
  steps: int
  position: dict  # the data iterator's state after this call's last batch


class Feed:
  """The calls of a run from step `start` to `total`, one call placed ahead of the one running."""

  def __init__(self, task, iterator, mesh, steps_per_call: int, start: int, total: int):
    self.task, self.iterator, self.mesh = task, iterator, mesh
    self.per_call, self.next_step, self.total = steps_per_call, start, total
    self.start_position = iterator.get_state()  # what a save before any call keeps
    self.ready: collections.deque[Call] = collections.deque()

  def take(self) -> Call:
    """The next call's batches (placed ahead, or now on the first call)."""
    if not self.ready:
      self.prepare()
    return self.ready.popleft()

  def prepare(self) -> None:
    """Draws and places the next call (several single steps when its batches differ in shape), unless
    one is ready already or the run has no steps left."""
    if self.ready or self.next_step >= self.total:
      return
    step = self.next_step
    whole = step % self.per_call == 0 and step + self.per_call <= self.total
    count = self.per_call if whole else 1
    local, positions = [], []
    for i in range(count):
      local.append(self.task.inputs(next(self.iterator), step + i))
      positions.append(self.iterator.get_state())
    self.next_step += count
    if count > 1 and all(_shapes(b) == _shapes(local[0]) for b in local):
      self.ready.append(Call(sharding.global_batches(self.mesh, local), count, positions[-1]))
      return
    for batch, position in zip(local, positions):
      self.ready.append(Call(sharding.global_batches(self.mesh, [batch]), 1, position))


def _shapes(batch: dict) -> dict:
  return {k: np.shape(v) for k, v in batch.items()}
