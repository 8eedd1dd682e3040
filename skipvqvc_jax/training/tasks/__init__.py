"""What the one training loop can train: each task gives the loop its data, its initial state, its
jitted step, the per-batch host preparation, its test metrics and its samples (the contract is
`tasks.base.Task`). A new task is a module here and one entry of `TASKS`."""

from __future__ import annotations

from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.training.tasks.base import Task
from skipvqvc_jax.training.tasks.vocoder import VocoderTask
from skipvqvc_jax.training.tasks.voice_conversion import VoiceConversionTask

TASKS: dict[str, type[Task]] = {'voice_conversion': VoiceConversionTask, 'vocoder': VocoderTask}


def _task_class(config) -> type[Task]:
  name = config.get('task', 'voice_conversion')
  if name not in TASKS:
    raise ConfigError(f'--config.task={name!r}: use {" or ".join(TASKS)}')
  return TASKS[name]


def check_config(config) -> None:
  """One-line errors for the task's settings that cannot work, before anything is read or written."""
  _task_class(config).check_config(config)


def model_info(config):
  """The `checkpoints.ModelInfo` (model.json) of the model `config` trains."""
  return _task_class(config).model_info(config)


def default_workdir(config) -> str:
  """Where a run of `config` goes without --workdir: its task's choice."""
  return _task_class(config).default_workdir(config)


def next_step(config, program: str, workdir: str) -> str:
  """The `next:` line of a finished run of `config`: its task's commands."""
  return _task_class(config).next_step(program, workdir)


def make(config, workdir: str, mesh) -> Task:
  """The task `config.task` names (default: voice conversion), set up to train in `workdir`."""
  return _task_class(config)(config, workdir, mesh)


__all__ = ['TASKS', 'Task', 'check_config', 'default_workdir', 'make', 'model_info', 'next_step']
