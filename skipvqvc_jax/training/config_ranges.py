"""The valid values of every numeric setting of a training config, in one table, checked before anything
is read or written: a mistake is one line naming the flag (`--config.grad_clip_norm=-1: must be a
number > 0`), never a run that silently diverges. A task checks what only it knows besides (model widths
that must divide, crops that must fit a model)."""

from __future__ import annotations

import dataclasses

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.data import f0


@dataclasses.dataclass(frozen=True)
class Range:
  """The valid values of a numeric setting: whole or real numbers from `low` (or above it, with
  `above`) up to `high` (below it, with `below`)."""

  low: float
  high: float | None = None
  whole: bool = True
  above: bool = False
  below: bool = False

  def refuses(self, value) -> str | None:
    """Why `value` is not valid ('must be ...'), or None."""
    kind = 'a whole number' if self.whole else 'a number'
    ok_type = isinstance(value, int) if self.whole else isinstance(value, int | float)
    bounds = [f'> {self.low}' if self.above else f'>= {self.low}']
    if self.high is not None:
      bounds.append(f'< {self.high}' if self.below else f'<= {self.high}')
    if not ok_type or isinstance(value, bool) or value != value:  # NaN is not a setting
      return f'must be {kind} {" and ".join(bounds)}'
    low_ok = value > self.low if self.above else value >= self.low
    high_ok = self.high is None or (value < self.high if self.below else value <= self.high)
    return None if low_ok and high_ok else f'must be {kind} {" and ".join(bounds)}'


# Every numeric setting of the loop and the shared data, features and model fields, checked in one
# place before anything is read or written (a task checks what only it knows: model widths that must
# divide, crops that must fit a model). A field a config does not have is skipped.
RANGES = {
  'batch_size': Range(1),
  'per_device_batch_size': Range(0),
  'num_train_steps': Range(0),
  'steps_per_call': Range(1),
  'log_every_steps': Range(1),
  'eval_every_steps': Range(1),
  'checkpoint_every_steps': Range(1),
  'keep_checkpoints': Range(1),
  'tensorboard_part_mib': Range(0, whole=False),
  'storage_timeout_seconds': Range(0, whole=False, above=True),
  'pause_fraction': Range(0, 1, whole=False, below=True),
  'profile_steps': Range(0),
  'eval_batches': Range(1),
  'seed': Range(0, 2**32 - 1),
  'learning_rate': Range(0, whole=False, above=True),
  'warmup_steps': Range(0),
  'lr_end_fraction': Range(0, 1, whole=False),
  'adam_b1': Range(0, 1, whole=False, below=True),
  'adam_b2': Range(0, 1, whole=False, below=True),
  'adam_eps': Range(0, whole=False),
  'grad_clip_norm': Range(0, whole=False, above=True),
  'latent_loss_weight': Range(0, whole=False),
  'codebook.restart_below': Range(0, 1, whole=False),
  'codebook.usage_decay': Range(0, 1, whole=False, below=True),
  'codebook.ema_decay': Range(0, 1, whole=False, below=True),
  'data.prefetch': Range(0),
  'data.num_test_speakers': Range(-1),
  'data.speaker_depth': Range(1),
  'features.sample_rate': Range(1),
  'features.n_fft': Range(1),
  'features.hop_length': Range(1),
  'features.win_length': Range(1),
  'features.n_mels': Range(1),
  'features.fmin': Range(0, whole=False),
  'features.log_floor': Range(0, whole=False, above=True),
}
CHOICES = {
  'compute_dtype': ('float32', 'bfloat16'),
  'lr_schedule': ('constant', 'warmup_cosine'),
  'data.f0_method': (*f0.METHODS, f0.CREPE),
}


def check(config) -> None:
  """A ConfigError naming the first setting of `config` outside its range (fields it lacks are not
  checked: a vocoder's config has no model)."""
  for field, valid in RANGES.items():
    section, _, name = field.rpartition('.')
    holder = config.get(section) if section else config
    if holder is None or name not in holder:
      continue
    problem = valid.refuses(holder[name])
    if problem:
      raise ConfigError(f'--config.{field}={holder[name]!r}: {problem}')
  for field, choices in CHOICES.items():
    section, _, name = field.rpartition('.')
    holder = config.get(section) if section else config
    if holder is not None and name in holder and holder[name] not in choices:
      raise ConfigError(f'--config.{field}={holder[name]!r}: choose one of {", ".join(choices)}')
