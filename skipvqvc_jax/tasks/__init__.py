"""What the one training loop can train: each task gives the loop its data, its initial state, its
jitted step, the per-batch host preparation, its test metrics and its samples (the contract is
`train.Task`)."""
from __future__ import annotations

from skipvqvc_jax.errors import ConfigError
from skipvqvc_jax.tasks.vocoder import VocoderTask
from skipvqvc_jax.tasks.voice_conversion import VoiceConversionTask

TASKS = {'voice_conversion': VoiceConversionTask, 'vocoder': VocoderTask}


def make(config, workdir: str, mesh):
  """The task `config.task` names (default: voice conversion), set up to train in `workdir`."""
  name = config.get('task', 'voice_conversion')
  if name not in TASKS:
    raise ConfigError(f'config.task={name!r}: use {" or ".join(TASKS)}')
  return TASKS[name](config, workdir, mesh)
