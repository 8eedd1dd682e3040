"""Restoring a run, in one place: what conversion, evaluation, porting, vocoders and the tasks stand on.

Two kinds of saved model:
- a *model directory*: `model.json` (the model's `spec()`) and `params/` (orbax), written by
  `save_model` (for example by `port_torch`);
- a *training workdir*: `config.json` and `checkpoints/<step>/` with the whole train state (parameters,
  optimizer state, step, RNG) and the data iterator's position, written by `TrainCheckpoints`.

`load(source, step)` gives the inference model of either: a workdir's voice-conversion model, or its
generator when it trains a vocoder. Only those parameters are read (an orbax partial restore shaped by
`nnx.eval_shape`): no optimizer state, no discriminators, no data iterator.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from skipvqvc_jax import fileio, models
from skipvqvc_jax.errors import CheckpointError, TrainingError

CONFIG_FILE = 'config.json'


# ---- model directories ----------------------------------------------------------------------------

def save_model(directory: str, model) -> None:
  """Writes `model` to a new `directory`, atomically: it appears complete or not at all."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise CheckpointError(f'{directory} already exists; choose a new directory')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.' + os.path.basename(directory) + '.', dir=parent)
  try:
    with open(os.path.join(staging, 'model.json'), 'w') as f:
      json.dump(model.spec(), f, indent=1)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(staging, 'params'), nnx.state(model, nnx.Param))
      checkpointer.wait_until_finished()
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def is_model_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, 'model.json'))


def load_model(directory: str):
  """Rebuilds the model saved in `directory` and restores its parameters onto the default device."""
  if not is_model_dir(directory):
    raise CheckpointError(f'{directory}: no model.json; not a saved skipvqvc_jax model')
  model = models.build(**fileio.load_json(os.path.join(directory, 'model.json')))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(model, nnx.Param))
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.abspath(os.path.join(directory, 'params')), abstract)
  nnx.update(model, params)
  return model


# ---- training workdirs ----------------------------------------------------------------------------

def is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json)."""
  if not is_workdir(workdir):
    raise TrainingError(f'{workdir} has no {CONFIG_FILE}: not a training workdir')
  return ml_collections.ConfigDict(fileio.load_json(os.path.join(workdir, CONFIG_FILE)))


def task_of(config) -> str:
  return config.get('task', 'voice_conversion')


def inference_spec(config) -> tuple[dict, tuple[str, ...]]:
  """(the `models.build` arguments of the model a run trains for inference, where its parameters sit
  in the train state): the voice-conversion model, or a vocoder run's generator."""
  if task_of(config) == 'vocoder':
    return (dict(name='melgan', n_mels=config.features.n_mels, ngf=config.generator.ngf,
                 residual_layers=config.generator.residual_layers), ('params', 'generator'))
  return (dict(name=config.model.name, channel=config.model.channel, n_embed=config.model.n_embed,
               in_channel=config.features.n_mels, gru_init=config.model.gru_init), ('params',))


class TrainCheckpoints:
  """Training checkpoints in {workdir}/checkpoints/<step>/: the train state and the data iterator state.

  Orbax writes each checkpoint under a temporary name and renames it when complete, so a crash during a
  save never leaves the latest complete checkpoint unreadable. Saves are asynchronous; `wait` blocks.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

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
      raise CheckpointError(f'no checkpoint of step {step} in {self.directory}; saved steps: '
                              f'{", ".join(map(str, steps))}')
    return step

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step` (default: the latest), placed as `abstract_state` says."""
    step = self.check_step(step)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def restore_subtree(self, abstract: dict, step: int | None = None) -> dict:
    """The part of the train state shaped like `abstract` (a nested dict from the state's root, e.g.
    {'params': ...}), as host arrays: nothing else of the checkpoint is read."""
    path = os.path.join(self.directory, str(self.check_step(step)), 'state')
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
    with ocp.PyTreeCheckpointer() as checkpointer:
      stored = checkpointer.metadata(path).item_metadata.tree
      _check_fits(stored, abstract, path)
      return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          item=abstract, restore_args=restore_args, partial_restore=True))

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _shapes(tree) -> dict[str, tuple]:
  """{'/a/b/0': shape} of every array of a nested dict (list indices as strings, as orbax stores)."""
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_fits(stored, abstract, path: str) -> None:
  """Refuses a partial restore whose target is not a part of what the checkpoint stores: orbax would
  leave the missing parameters as they were, silently."""
  have = _shapes({k: stored[k] for k in abstract if k in stored})
  want = _shapes(abstract)
  missing = sorted(set(want) - set(have))
  wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if missing or wrong:
    detail = '; '.join(filter(None, [
        missing and f'{len(missing)} parameters missing (first {missing[0]})',
        wrong and f'{wrong[0]} is {have[wrong[0]]}, the model has {want[wrong[0]]}']))
    raise CheckpointError(f'{path} does not fit the model in its config.json: {detail}')


def saved_steps(workdir: str) -> list[int]:
  with TrainCheckpoints(workdir, async_save=False) as ckpt:
    return ckpt.all_steps()


def latest_step(workdir: str) -> int | None:
  steps = saved_steps(workdir)
  return steps[-1] if steps else None


def restore_model(workdir: str, step: int | None = None):
  """The inference model of a training workdir at `step` (default: the latest), on this host."""
  spec, path = inference_spec(read_config(workdir))
  model = models.build(**spec)
  params = nnx.state(model, nnx.Param)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(params))
  for key in reversed(path):
    abstract = {key: abstract}
  with TrainCheckpoints(workdir, async_save=False) as ckpt:
    restored = ckpt.restore_subtree(abstract, step)
  for key in path:
    restored = restored[key]
  nnx.replace_by_pure_dict(params, restored)
  nnx.update(model, params)
  return model


def load(source: str, step: int | None = None):
  """The model of a model directory, or of a training workdir's checkpoint (default: the latest)."""
  if is_model_dir(source):
    return load_model(source)
  if not is_workdir(source):
    raise CheckpointError(f'{source}: not a model directory or a training workdir')
  return restore_model(source, step)


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
