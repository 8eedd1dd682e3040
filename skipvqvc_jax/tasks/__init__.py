"""What the one training loop can train: each task gives the loop its data, its initial state, its
jitted step, the per-batch host preparation, its test metrics and its samples (the contract is
`train.Task`)."""
from __future__ import annotations

from skipvqvc_jax.errors import ConfigError
from skipvqvc_jax.tasks.vocoder import VocoderTask
from skipvqvc_jax.tasks.voice_conversion import VoiceConversionTask

TASKS = {'voice_conversion': VoiceConversionTask, 'vocoder': VocoderTask}


def _task_class(config):
  name = config.get('task', 'voice_conversion')
  if name not in TASKS:
    raise ConfigError(f'--config.task={name!r}: use {" or ".join(TASKS)}')
  return TASKS[name]


def check_config(config) -> None:
  """One-line errors for the task's settings that cannot work, before anything is read or written."""
  _task_class(config).check_config(config)


def make(config, workdir: str, mesh):
  """The task `config.task` names (default: voice conversion), set up to train in `workdir`."""
  return _task_class(config)(config, workdir, mesh)
