"""What a resume must keep: the model (model.json), what its stored steps mean (the trainer, the
features, the crop) and its global batch. Each change is refused in one line before config.json and
model.json, which conversion and evaluation read, are touched."""

from __future__ import annotations

import json

import jax

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import TrainingError
from skipvqvc_jax.core.fileio import load_json
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import tasks


def check(config, workdir: str) -> None:
  """Refuses to resume a workdir whose checkpoints belong to another model or task, before its
  config.json and model.json (which conversion and evaluation read) are touched."""
  if not storage.isfile(storage.join(workdir, checkpoints.MODEL_FILE)):
    return  # written before model.json: the restore itself checks every parameter's shape
  old, new = checkpoints.read_model_info(workdir), tasks.model_info(config)
  if old != new:
    raise TrainingError(_another_model(workdir, old, new))
  _check_same_meaning(config, workdir)
  _check_test_speakers(config, workdir)
  _check_same_batch(config, workdir)


def _another_model(workdir: str, old, new) -> str:
  """Why model.json and the config disagree: model.json edited or damaged (the checkpoints fit
  the config), or a run of another model."""
  if checkpoints.checkpoints_fit(workdir, new):
    return (
      f'{workdir}/{checkpoints.MODEL_FILE} says {old.spec}, but the checkpoints there hold this '
      f"config's {new.spec}: {checkpoints.MODEL_FILE} was edited or damaged, the checkpoints fit. "
      f'Delete {checkpoints.MODEL_FILE} and rerun: the restore checks every parameter and writes it '
      f'anew (--config.resume=False would set the intact checkpoints aside)'
    )
  return (
    f'{workdir} holds a run of {old.spec}; this config trains {new.spec}: choose another '
    f'--workdir, or add --config.resume=False to move its checkpoints aside and start anew'
  )


# What a stored step means besides the model (model.json): resumed with another trainer, its steps
# would continue, and its checkpoints convert, with a normalisation they were not trained with; with
# other features or crops, on other data than the iterator's position counts.
KEPT_ON_RESUME = (
  'trainer',
  'features',
  'data.crop_frames',
  'trainable',
  'codebook',
  'flat_optimizer',
)
# What a run's config.json from before a field existed ran with (its checkpoints' optimizer state is
# one array per parameter).
UNWRITTEN = {'flat_optimizer': False}


def _check_same_meaning(config, workdir: str) -> None:
  path = storage.join(workdir, checkpoints.CONFIG_FILE)
  if not storage.isfile(path):
    return
  old = load_json(path)
  for field in KEPT_ON_RESUME:
    section, _, name = field.rpartition('.')
    stored = (old.get(section) or {}) if section else old
    current = config.get(section) if section else config
    if field in UNWRITTEN:
      stored = {name: UNWRITTEN[field], **stored}
    if current is None or name not in current or name not in stored:
      continue
    now = json.loads(
      json.dumps(current[name].to_dict() if hasattr(current[name], 'to_dict') else current[name])
    )
    before = stored[name]
    if now == before:
      continue
    if isinstance(before, dict):
      diff = [
        f'--config.{field}.{k}={before.get(k)!r} (this run: {now.get(k)!r})'
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
      ]
      said = ', '.join(diff)
    else:
      said = f'--config.{field}={before!r} (this run: {now!r})'
    raise TrainingError(
      f'{workdir} was trained with {said}: its checkpoints mean that; resume with the same, '
      f'choose another --workdir, or add --config.resume=False to move them aside and start anew'
    )


def _check_same_batch(config, workdir: str) -> None:
  """A resume keeps the global batch: the data position is a global batch index, and the batches
  after it (and so the run) are those of that batch size; another device count is fine."""
  path = storage.join(workdir, checkpoints.CONFIG_FILE)
  old = load_json(path).get('batch_size') if storage.isfile(path) else None
  if old is None or old == config.batch_size:
    return
  devices = jax.device_count()
  per_device = (
    f' or --config.per_device_batch_size={old // devices} ({old} / {devices} devices)'
    if old % devices == 0
    else f' (no per-device batch makes {old} on {devices} devices)'
  )
  raise TrainingError(
    f'{workdir} trains with a global batch of {old}; this run would use {config.batch_size} '
    f'({devices} devices): set --config.batch_size={old}{per_device} to resume it exactly, '
    f'or --config.resume=False to start anew'
  )


def _check_test_speakers(config, workdir: str) -> None:
  """A run that evaluated on unseen speakers keeps evaluating on them: were its test features gone,
  the data's fallback (test on the training folder) would report training speakers as unseen."""
  if config.data.get('test_dir') or not storage.isfile(
    storage.join(workdir, checkpoints.CONFIG_FILE)
  ):
    return  # a test folder named on this run's command line is checked when it is read
  data = checkpoints.read_config(workdir).data
  test_dir, train_dir = data.get('test_dir'), data.get('train_dir')
  if not test_dir or test_dir == train_dir:
    return
  if not storage.isdir(test_dir) or not any(f.endswith('.npy') for f in storage.listdir(test_dir)):
    raise TrainingError(
      f'{workdir} evaluates on the unseen speakers of {test_dir}, which holds no features any more: '
      f'put them back (skipvqvc-preprocess again) or name a test folder with --config.data.test_dir; '
      f'training speakers are not evaluated as unseen ones'
    )
