"""Restoring a run, in one place: what conversion, evaluation, porting, vocoders and the tasks stand on.

Two kinds of saved model, each described by the same `model.json` (`ModelInfo`): a *model directory*
(`model.json`, `params/`, written by `save_model`, e.g. by `apps.port`) and a *training workdir*
(`model.json`, `config.json` and `checkpoints/<step>/` with the whole train state and the data
iterator's position, written by `TrainCheckpoints`). `load(source, step)` restores the model of
either; from a workdir only the model's parameters are read (an orbax partial restore shaped by
`nnx.eval_shape`). Nothing here knows a task's config layout: a new task or model argument changes
its `model.json`, not this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.core import deadlines, fileio, storage
from skipvqvc_jax.core.errors import CheckpointError, StorageError, TrainingError
from skipvqvc_jax.store import checkpoint_trees

CONFIG_FILE = 'config.json'
MODEL_FILE = 'model.json'
# Seconds a checkpoint may take to be written (config.storage_timeout_seconds).
STORAGE_TIMEOUT = 600.0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What `model.json` says of a saved model: how to build it, and where a training checkpoint keeps
  its parameters (('params',) for a voice-conversion run, ('params', 'generator') for a vocoder's)."""

  spec: dict  # `models.build(**spec)` rebuilds the model
  state_path: tuple[str, ...] = ('params',)
  # A voice-conversion model directory: what conversion needs besides the parameters (its trainer,
  # feature parameters, ...; `convert.Settings`). A workdir keeps these in config.json.
  conversion: dict | None = None

  @property
  def kind(self) -> str:
    """The model's kind: 'voice_conversion' or 'vocoder' (`models.kind_of`)."""
    return models.kind_of(self.spec['name'])

  def to_json(self) -> dict:
    extra = {} if self.conversion is None else dict(conversion=self.conversion)
    return dict(model=self.spec, state_path=list(self.state_path), **extra)

  @classmethod
  def from_json(cls, data: dict) -> ModelInfo:
    if 'model' not in data:  # a model directory written before state_path: the spec alone
      return cls(dict(data))
    state_path = tuple(data.get('state_path', ('params',)))
    return cls(dict(data['model']), state_path, data.get('conversion'))


def write_model_info(directory: str, info: ModelInfo) -> None:
  fileio.save_json(storage.join(directory, MODEL_FILE), info.to_json())


def read_model_info(source: str) -> ModelInfo:
  """The `model.json` of a model directory or a training workdir; CheckpointError when it is not
  one (not JSON, or naming no model this package builds)."""
  path = storage.join(source, MODEL_FILE)
  if storage.isfile(path):
    try:
      info = ModelInfo.from_json(fileio.load_json(path))
      models.get_class(info.spec['name'])
    except Exception as e:  # pylint: disable=broad-except  (JSON, a missing key, an unknown model)
      advice = (
        'delete it and rerun the training command: the restore checks every parameter against the '
        'config and writes it anew'
        if is_workdir(source)
        else 'copy it again from where the model directory came from'
      )
      raise CheckpointError(
        f'{path} is damaged ({type(e).__name__}: {" ".join(str(e).split())[:120]}); {advice}'
      ) from None
    return info
  if is_workdir(source):
    raise CheckpointError(
      f'{source} has no {MODEL_FILE} (workdirs written by skipvqvc_jax 0.1 lack it): rerun its '
      f'training command once; it resumes at its last step and writes {MODEL_FILE}'
    )
  raise CheckpointError(f'{source}: not a model directory or a training workdir (no {MODEL_FILE})')


# ---- model directories ----------------------------------------------------------------------------


def save_model(
  directory: str, model, conversion: dict | None = None, files: dict[str, str] | None = None
) -> None:
  """Writes `model` to a new `directory`, atomically: it appears complete or not at all (on object
  storage, which has no rename: its model.json, what makes it a model directory, is written last).

  conversion: what conversion needs (`ModelInfo.conversion`); files: {name in the directory: a file
  to copy there} (a mean/std trainer's statistics)."""
  directory = storage.abspath(directory)
  if storage.exists(directory):
    raise CheckpointError(f'{directory} already exists; choose a new directory')
  info = ModelInfo(model.spec(), conversion=conversion)
  files = files or {}
  if storage.is_url(directory):
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(storage.join(directory, 'params'), nnx.state(model, nnx.Param))
      checkpointer.wait_until_finished()
    for name, source in files.items():
      storage.copy(source, storage.join(directory, name))
    write_model_info(directory, info)
    return
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.' + os.path.basename(directory) + '.', dir=parent)
  try:
    os.chmod(staging, fileio.public_mode(directory=True))  # mkdtemp's own mode is 0700
    with open(os.path.join(staging, MODEL_FILE), 'w') as f:
      json.dump(info.to_json(), f, indent=1)
    for name, source in files.items():
      storage.copy(source, os.path.join(staging, name))
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(staging, 'params'), nnx.state(model, nnx.Param))
      checkpointer.wait_until_finished()
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def is_model_dir(path: str) -> bool:
  return storage.isfile(storage.join(path, MODEL_FILE)) and not is_workdir(path)


def load(source: str, step: int | None = None):
  """The model of a model directory, or of a training workdir's checkpoint at `step` (default: the
  newest intact one), rebuilt from its model.json, its parameters on the default device."""
  info = read_model_info(source)
  model = models.build(**info.spec)
  params = nnx.state(model, nnx.Param)
  if not is_workdir(source):
    if step is not None:
      raise CheckpointError(f'{source} is a model directory: it has no steps to choose from')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
    with ocp.StandardCheckpointer() as checkpointer:
      nnx.update(
        model, checkpointer.restore(storage.abspath(storage.join(source, 'params')), abstract)
      )
    return model
  # A training checkpoint holds the whole train state: read only the model's subtree of it.
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(params))
  for key in reversed(info.state_path):
    abstract = {key: abstract}
  with TrainCheckpoints(source, async_save=False) as ckpt:
    restored = ckpt.restore_subtree(abstract, step)
  for key in info.state_path:
    restored = restored[key]
  nnx.replace_by_pure_dict(params, restored)
  nnx.update(model, params)
  return model


def load_matching(source: str, spec: dict, ignore: tuple = ()):
  """`load(source)`, refused unless it is built as `spec` says (but for `ignore`d sizes): what a run's
  `init_from` starts from."""
  loaded = load(source)
  found = {k: v for k, v in loaded.spec().items() if k not in ignore}
  if found != {k: v for k, v in spec.items() if k not in ignore}:
    raise TrainingError(f'init_from {source} holds {loaded.spec()}, not the configured {spec}')
  return loaded


def params_of(model) -> dict:
  """A model's parameters as a pure dict of arrays (what a train state holds)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# ---- training workdirs ----------------------------------------------------------------------------


def is_workdir(path: str) -> bool:
  return storage.isfile(storage.join(path, CONFIG_FILE))


DATA_PATHS = ('train_dir', 'test_dir', 'stats_file')  # config.json's paths into the data


def portable_path(path: str, workdir: str) -> str:
  """How config.json stores a data path: relative to the workdir when inside it (so the workdir can
  move), else absolute (so it can be read from any directory)."""
  path, workdir = storage.abspath(path), storage.abspath(workdir)
  return storage.relpath(path, workdir) if storage.is_inside(path, workdir) else path


# What restoring, converting and evaluating read from a workdir's config.json, by task: without
# them a stored step has no meaning (other fields keep their defaults).
REQUIRED_FIELDS = {
  'voice_conversion': ('trainer', 'model.name', 'features', 'data'),
  'vocoder': ('generator', 'features', 'data'),
}


def _lacks(stored: dict, field: str) -> bool:
  for name in field.split('.'):
    if not isinstance(stored, dict) or name not in stored:
      return True
    stored = stored[name]
  return False


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json), data paths resolved."""
  if not is_workdir(workdir):
    raise TrainingError(f'{workdir} has no {CONFIG_FILE}: not a training workdir')
  path = storage.join(workdir, CONFIG_FILE)
  stored = fileio.load_json(path)
  if not isinstance(stored, dict):
    raise TrainingError(f'{path} is not a config (a JSON object of fields)')
  required = REQUIRED_FIELDS.get(stored.get('task', 'voice_conversion'), ())
  missing = [field for field in required if _lacks(stored, field)]
  if missing:
    raise TrainingError(
      f'{path} lacks {", ".join(missing)} (edited by hand, or written by another program): put '
      f'back the values the run was trained with, from a copy of the file or its training command'
    )
  config = ml_collections.ConfigDict(stored)
  for key in DATA_PATHS:
    path = config.data.get(key)
    if path and not storage.isabs(path):
      # Relative to the workdir; workdirs written before that stored paths relative to where
      # training ran, so such a path is still taken as it is where only that one exists.
      inside = storage.join(workdir, path)
      config.data[key] = storage.abspath(
        path if os.path.exists(path) and not storage.exists(inside) else inside
      )
  return config


# What a failed read of a checkpoint's own files raises (orbax, tensorstore, the OS). Anything else
# (an encoding error under another locale, a permission, a bug) says nothing about the checkpoint,
# which is then left where it is: one line, nothing moved.
DAMAGE = (OSError, ValueError, EOFError, KeyError)
NOT_DAMAGE = (UnicodeError, PermissionError)


class TrainCheckpoints:
  """Training checkpoints in {workdir}/checkpoints/<step>/: the train state and the data iterator state.

  Orbax writes each checkpoint under a temporary name and renames it when complete, so a crash during a
  save never leaves the latest complete checkpoint unreadable. Saves are asynchronous; `wait` blocks.
  """

  def __init__(
    self, workdir: str, keep: int = 3, async_save: bool = True, timeout: float = STORAGE_TIMEOUT
  ):
    self.workdir = storage.abspath(workdir)
    self.directory = storage.join(self.workdir, 'checkpoints')
    self.timeout = timeout
    self.complete = None  # the newest step known to be written whole
    self.writing = None  # the step being written in the background
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    self.manager = self._bounded(
      lambda: ocp.CheckpointManager(self.directory, options=options), None
    )
    self.complete = self.manager.latest_step()

  def _bounded(self, call, step: int | None):
    """call() (orbax) within the deadline, waiting for checkpoint `step` (None: opening the folder);
    a failure of a checkpoint's write is one StorageError naming it and where a rerun continues."""
    what = f'checkpoint {step} to reach' if step is not None else 'the checkpoints of'
    try:
      if jax.process_count() > 1:
        # orbax's barriers are collectives and must run in the calling thread: from a helper thread
        # the processes of a pod deadlocked at their next collective. Orbax's own timeouts apply.
        return call()
      return deadlines.bounded(
        call,
        f'{what} {self.directory}',
        self.timeout,
        advice=f'check that the storage answers (or raise --config.storage_timeout_seconds), then '
        f'rerun the same command: it continues from {self.resumes_from()}',
      )
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore and OS errors alike)
      if step is None or isinstance(e, StorageError):
        raise  # opening the folder: its own error (a read-only folder names itself)
      raise self._failed(step, e) from None

  def resumes_from(self) -> str:
    """Where a rerun continues from, as far as this process knows (no storage is read)."""
    if self.writing is not None and self.complete is None:
      return f'checkpoint {self.writing} if it was written whole, else the start'
    return f'checkpoint {self.complete}' if self.complete is not None else 'the start (none saved)'

  def _failed(self, step, e: Exception) -> StorageError:
    reason = ' '.join(str(e).split())
    where = 'Read-only file system' if 'Read-only file system' in reason else reason[-240:]
    deadlines.abandoned.append(f'checkpoint {step}')  # orbax's threads may never end: exit at once
    return StorageError(
      f'checkpoint {step} could not be written to {self.directory} ({type(e).__name__}: {where}); '
      f'training stopped: make it writable (or choose another --workdir) and rerun the same command '
      f'to continue from {self.resumes_from()}'
    )

  def check_for_errors(self) -> None:
    """StorageError when the checkpoint being written in the background failed, or when orbax's
    check has not returned within the deadline (it waits for the checkpoint's metadata writes, which
    a storage that stopped answering holds for minutes: a run hung there at a log step)."""
    step = self.writing if self.writing is not None else self.complete
    self._bounded(self.manager.check_for_errors, step)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def check_step(self, step: int | None) -> int:
    """`step`, or the latest when None; CheckpointError listing the saved steps when not saved."""
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f'{self.workdir} has no checkpoint yet')
    if step is None:
      return steps[-1]
    if step not in steps:
      raise CheckpointError(
        f'no checkpoint of step {step} in {self.directory}; saved steps: '
        f'{", ".join(map(str, steps))}'
      )
    return step

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Starts writing checkpoint `step` (after the one before it is written: that wait has a deadline,
    and a failure of either is one StorageError)."""
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
    )
    awaited = step if self.writing is None else self.writing
    saved = self._bounded(lambda: self.manager.save(step, args=args, force=force), awaited)
    if saved:  # orbax started it once the one before was written
      self._written()
      self.writing = step
    return saved

  def _written(self) -> None:
    if self.writing is not None:
      self.complete, self.writing = self.writing, None

  def _newest_intact(self, step: int | None, read, set_aside: bool):
    """read(step) of `step`; or, when None, of the newest checkpoint that reads, newest first. A
    checkpoint that fails to read (a truncated or missing file) is named in a warning and, with
    set_aside, moved to checkpoints.damaged/ so that training can save that step again."""
    if step is not None:
      return read(self.check_step(step))
    self.check_step(None)
    for candidate in reversed(self.all_steps()):
      try:
        return read(candidate)
      except CheckpointError:  # a checkpoint of another model: no older one fits better
        raise
      except Exception as e:  # pylint: disable=broad-except  (tensorstore, orbax and OS errors alike)
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if isinstance(e, NOT_DAMAGE) or not isinstance(e, DAMAGE):
          raise CheckpointError(
            f'cannot read checkpoint {candidate} in {self.directory} ({type(e).__name__}: '
            f'{reason}): that is not damage, so nothing was moved'
          ) from None
        if not storage.exists(storage.join(self.directory, str(candidate))):
          # Removed while read: a run training in this workdir rotated it out. Not damage.
          logging.info(
            'checkpoint %d of %s was removed while read; trying the one before it',
            candidate,
            self.directory,
          )
          continue
        moved = self._set_aside(candidate) if set_aside else None
        logging.warning(
          'checkpoint %d in %s is damaged (%s)%s; trying the one before it',
          candidate,
          self.directory,
          reason,
          f', moved to {moved}' if moved else '',
        )
    raise CheckpointError(
      f'no intact checkpoint in {self.directory} (every one is damaged; see the warnings above)'
    )

  def _set_aside(self, step: int) -> str:
    aside = storage.join(
      self.workdir, 'checkpoints.damaged', f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
    )
    storage.makedirs(storage.dirname(aside))
    storage.rename(storage.join(self.directory, str(step)), aside)
    self.manager.reload()
    return aside

  def _stored_state(self, step: int, checkpointer) -> tuple[str, dict]:
    """(path, the tree of array metadata) of a checkpoint's state."""
    path = storage.join(self.directory, str(step), 'state')
    metadata = checkpointer.metadata(path)
    metadata = getattr(metadata, 'item_metadata', metadata)  # orbax >= 0.11.2x wraps the tree
    tree = getattr(metadata, 'tree', metadata)
    if tree is None:  # orbax logs a warning and answers nothing for a checkpoint it cannot read
      raise ValueError(f'{path}: its metadata cannot be read')
    return path, tree

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step` (default: the newest intact one), placed as `abstract_state`
    says. A damaged newest checkpoint is moved aside, with a warning."""

    def read(step):
      with ocp.PyTreeCheckpointer() as checkpointer:
        path, stored = self._stored_state(step, checkpointer)
      checkpoint_trees.check_fits(stored, {'params': abstract_state['params']}, path, exact=True)
      restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
      )
      return restored.state, restored.data

    return self._newest_intact(step, read, set_aside=True)

  def restore_subtree(self, abstract: dict, step: int | None = None) -> dict:
    """The part of the train state shaped like `abstract` (a nested dict from the state's root, e.g.
    {'params': ...}), as host arrays: nothing else of the checkpoint is read, and nothing is moved."""
    # Stored dict keys are strings; nnx lists give integer keys, which older orbax will not match.
    target = checkpoint_trees.string_keys(abstract)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)

    def read(step):
      with ocp.PyTreeCheckpointer() as checkpointer:
        path, stored = self._stored_state(step, checkpointer)
        checkpoint_trees.check_fits(stored, abstract, path)
        return checkpoint_trees.keys_like(
          checkpointer.restore(
            path,
            args=ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args, partial_restore=True
            ),
          ),
          abstract,
        )

    return self._newest_intact(step, read, set_aside=False)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    """Until the checkpoint being written is whole (with a deadline; its failure a StorageError)."""
    self._bounded(self.manager.wait_until_finished, self.writing)
    self._written()

  def close(self) -> None:
    self.manager.close()


def latest_step(workdir: str) -> int | None:
  with TrainCheckpoints(workdir, async_save=False) as ckpt:
    return ckpt.latest_step()


def probe_writer(workdir: str, timeout: float) -> None:
  """Writes, reads back and deletes a small object in a bucket workdir's checkpoint folder through
  tensorstore, orbax's own writer, within `timeout`: a StorageError at the start instead of a run
  that trains, then hangs at its first checkpoint (tensorstore can fail to reach a bucket gcsfs
  reaches: other credentials, an emulator variable set for one client only, an account that may list
  but not write)."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel  (orbax's dependency)

  folder = storage.join(storage.abspath(workdir), 'checkpoints')
  key, payload = f'.write-probe-{os.getpid()}', b'skipvqvc_jax write probe'

  def write_read_delete():
    kvstore = ts.KvStore.open(folder.rstrip('/') + '/').result()
    kvstore.write(key, payload).result()
    back = kvstore.read(key).result().value
    kvstore.write(key, None).result()  # by name: a ranged delete lists, and deletes what it lists
    return back

  advice = (
    'the checkpoint writer (orbax, through tensorstore) cannot write there although the workdir '
    'was listed: check the credentials tensorstore uses (GOOGLE_APPLICATION_CREDENTIALS; '
    'TENSORSTORE_GCS_HTTP_URL for an emulator) and that the account may create objects'
  )
  try:
    back = deadlines.bounded(write_read_delete, f'a test write to {folder}', timeout, advice)
  except StorageError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (tensorstore's errors are ValueErrors)
    raise StorageError(
      f'a test write to {folder} failed ({" ".join(str(e).split())[:240]}); {advice}'
    ) from None
  if bytes(back) != payload:
    raise StorageError(f'a test write to {folder} read back other bytes; {advice}')


def checkpoints_fit(workdir: str, info: ModelInfo) -> bool:
  """Whether the newest checkpoint of `workdir` holds the parameters of the model `info` describes
  (from the checkpoint's metadata: no array is read)."""
  try:
    model = nnx.eval_shape(lambda: models.build(**info.spec))
    abstract = jax.tree.map(
      ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(nnx.state(model, nnx.Param))
    )
    for key in reversed(info.state_path):
      abstract = {key: abstract}
    with TrainCheckpoints(workdir, async_save=False) as ckpt, ocp.PyTreeCheckpointer() as reader:
      path, stored = ckpt._stored_state(ckpt.check_step(None), reader)  # pylint: disable=protected-access
    checkpoint_trees.check_fits(stored, abstract, path)
  except Exception:  # pylint: disable=broad-except  (not this model, or nothing readable: no)
    return False
  return True
