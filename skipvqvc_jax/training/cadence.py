"""When the training loop pauses to evaluate and checkpoint (`pause_fraction`): periods sized from
what pauses are measured to cost."""

from __future__ import annotations

import collections
import math
import statistics
import time

from absl import logging

from skipvqvc_jax.training import sharding

# Evaluation and checkpoint periods are sized for this part of the share, logging for LOG_SHARE of it:
# the rest covers the periods as set before the first decision and the noise of the measure, so that
# the whole run stays within it.
MARGIN = 0.7
LOG_SHARE = 0.1


class Cadence:
  """How often the loop evaluates and checkpoints: `eval_every_steps` and `checkpoint_every_steps`,
  both lengthened by one whole factor when `pause_fraction` > 0, so that pauses take at most that
  share of the wall time. What pauses cost is measured, not assumed: over the steps since the factor
  last changed, the wall time beyond what the steps themselves take (the median seconds a step takes
  in the log intervals), which is the evaluations, the checkpoints and the slower steps while an
  asynchronous checkpoint writes; not the compilations of new shapes (the multi-scale trainers'
  stretched lengths), which no cadence avoids. The first evaluation of a run only starts the measure
  (before it: compilation, the first checkpoint's set-up). At each later evaluation (a step every
  process reaches) process 0 works out the factor that keeps that under MARGIN x the share and every
  process takes it (they must pause at the same steps: a checkpoint is collective); it only grows.
  The log period grows the same way, from the measured time of a log line (a host sync, the console,
  TensorBoard): a fast model's step takes a few milliseconds, and logging every 5 steps cost it 13%.
  A resume measures again: cadence is not part of the training state."""

  def __init__(self, config):
    # Every period a multiple of the steps of one call (the loop checks between calls only).
    self.per_call = config.get('steps_per_call', 1)
    whole = lambda steps: -(-steps // self.per_call) * self.per_call
    self.base = (whole(config.eval_every_steps), whole(config.checkpoint_every_steps))
    self.base_log = whole(config.log_every_steps)
    self.fraction = config.get('pause_fraction', 0.0)
    self.factor = 1
    self.log_factor = 1
    self.log_seconds = collections.deque(maxlen=200)  # seconds each log line took
    self.log_decisions = []
    # (wall clock, step, compilation seconds) since the factor last changed, from the first evaluation
    self.window = None
    self.compile_seconds = 0.0  # of the compilations after the first step
    self.step_times = collections.deque(maxlen=200)  # seconds a step took, per log interval
    self.step_seconds_before = None  # their median when the log period last changed
    self.decisions = []  # every change of the factor, with the figures that made it

  @property
  def eval_every(self) -> int:
    return self.base[0] * self.factor

  @property
  def checkpoint_every(self) -> int:
    return self.base[1] * self.factor

  @property
  def log_every(self) -> int:
    return self.base_log * self.log_factor

  def log_took(self, seconds: float) -> None:
    self.log_seconds.append(seconds)

  def logged(self, seconds_per_step: float) -> None:
    self.step_times.append(seconds_per_step)

  def compiled(self, seconds: float) -> None:
    self.compile_seconds += seconds

  def steps_per_sec(self) -> float | None:
    """The steps' own rate: the median over the recent log intervals (pauses and compilations out),
    or, when none has ended since the log period changed, the one measured before it."""
    if self.step_times:
      return 1 / statistics.median(self.step_times)
    return 1 / self.step_seconds_before if self.step_seconds_before else None

  def settle(self, step: int) -> None:
    """After an evaluation: the factor, from process 0's measurements."""
    if not self.fraction:
      return
    if self.window is None:  # one-off costs before it: measure from here
      self.window = (time.perf_counter(), step, self.compile_seconds)
      return
    if not self.step_times or step <= self.window[1]:
      return
    start, first, compiled = self.window
    step_seconds = statistics.median(self.step_times)
    # Logging's seconds per step (sized apart, below) are not the pauses'.
    logging_per_step = (
      statistics.median(self.log_seconds) / self.log_every if self.log_seconds else 0.0
    )
    self._size_logging(step, step_seconds)
    # Seconds per step beyond the steps themselves, and what it would be at the periods as set.
    wall = time.perf_counter() - start - (self.compile_seconds - compiled)
    overhead = max(0.0, wall / (step - first) - step_seconds - logging_per_step)
    aim = self.fraction * MARGIN
    needed = math.ceil(overhead * self.factor * (1 - aim) / (aim * step_seconds))
    factor = sharding.same_everywhere(max(self.factor, needed))
    if factor == self.factor:
      return
    self.decisions.append(
      dict(
        step=step,
        factor=factor,
        previous=self.factor,
        overhead_seconds_per_step=overhead,
        step_seconds=step_seconds,
      )
    )
    self.factor, self.window = factor, (time.perf_counter(), step, self.compile_seconds)
    logging.info(
      'pauses took %.0f%% of the time (%.1f ms a step, %.1f ms of pauses per step): evaluating '
      'every %d and checkpointing every %d steps keeps them under %d%% '
      '(--config.pause_fraction=0 keeps the periods as set)',
      100 * overhead / (overhead + step_seconds),
      1000 * step_seconds,
      1000 * overhead,
      self.eval_every,
      self.checkpoint_every,
      round(100 * self.fraction),
    )

  def _size_logging(self, step: int, step_seconds: float) -> None:
    """The smallest whole factor of the log period that keeps logging under LOG_SHARE x the share."""
    if not self.log_seconds:
      return
    per_line = statistics.median(self.log_seconds)
    needed = math.ceil(per_line / (LOG_SHARE * self.fraction * step_seconds * self.base_log))
    factor = sharding.same_everywhere(max(self.log_factor, needed))
    if factor != self.log_factor:
      self.log_factor = factor
      # Steps timed between closer log lines ran slower (each line syncs with the device): the
      # steps' own rate is measured again at the new period.
      self.step_seconds_before = statistics.median(self.step_times)
      self.step_times.clear()
      self.log_decisions.append(
        dict(step=step, log_every=self.log_every, log_seconds=per_line, step_seconds=step_seconds)
      )
      logging.info(
        'a log line takes %.1f ms (%.1f ms a step): logging every %d steps',
        1000 * per_line,
        1000 * step_seconds,
        self.log_every,
      )

  def summary(self) -> dict:
    return dict(
      eval_every_steps=self.eval_every,
      checkpoint_every_steps=self.checkpoint_every,
      log_every_steps=self.log_every,
      factor=self.factor if self.fraction else None,
      decisions=self.decisions,
      log_decisions=self.log_decisions,
    )
