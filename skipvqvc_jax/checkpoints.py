"""Saving and restoring models: a directory with `model.json` (how to build it) and orbax params."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import orbax.checkpoint as ocp
from flax import nnx

from skipvqvc_jax import models


def model_spec(model) -> dict:
  """What rebuilds `model`: `models.build` arguments, or the MelGAN generator's."""
  from skipvqvc_jax.vocoders import melgan  # pylint: disable=import-outside-toplevel
  if isinstance(model, melgan.MelGANGenerator):
    return dict(name='melgan', n_mels=model.n_mels, ngf=model.ngf,
                residual_layers=model.residual_layers)
  return dict(name=model.name, channel=model.channel, n_embed=model.n_embed,
              in_channel=model.in_channel, gru_init=model.gru_init)


def build_from_spec(spec: dict):
  from skipvqvc_jax.vocoders import melgan  # pylint: disable=import-outside-toplevel
  spec = dict(spec)
  name = spec.pop('name')
  return melgan.MelGANGenerator(**spec) if name == 'melgan' else models.build(name, **spec)


def save_model(directory: str, model) -> None:
  """Writes `model` to a new `directory`, atomically: it appears complete or not at all."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise FileExistsError(f'{directory} already exists; choose a new directory')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.' + os.path.basename(directory) + '.', dir=parent)
  try:
    with open(os.path.join(staging, 'model.json'), 'w') as f:
      json.dump(model_spec(model), f, indent=1)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(staging, 'params'), nnx.state(model, nnx.Param))
      checkpointer.wait_until_finished()
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def load_model(directory: str):
  """Rebuilds the model saved in `directory` and restores its parameters onto the default device."""
  spec_path = os.path.join(directory, 'model.json')
  if not os.path.isfile(spec_path):
    raise FileNotFoundError(f'{directory}: no model.json; not a saved skipvqvc_jax model')
  with open(spec_path) as f:
    spec = json.load(f)
  model = build_from_spec(spec)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(model, nnx.Param))
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.abspath(os.path.join(directory, 'params')), abstract)
  nnx.update(model, params)
  return model


class TrainCheckpoints:
  """Training checkpoints in {workdir}/checkpoints/<step>/: the train state and the data iterator state.

  Orbax writes each checkpoint under a temporary name and renames it when complete, so a crash during a
  save never leaves the latest complete checkpoint unreadable. Saves are asynchronous; `wait` blocks.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def check_step(self, step: int | None) -> int:
    """`step`, or the latest when None; a ValueError listing the saved steps when it is not saved."""
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f'{os.path.dirname(self.directory)} has no checkpoint yet')
    if step is None:
      return steps[-1]
    if step not in steps:
      raise FileNotFoundError(f'no checkpoint of step {step} in {self.directory}; saved steps: '
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

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
