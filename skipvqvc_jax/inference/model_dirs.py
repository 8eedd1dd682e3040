"""Model directories: what `skipvqvc-port` makes. A model directory holds a model's parameters and what
conversion needs beside them (the trainer's normalisation, its statistics, the feature parameters), so
it converts alone. It is made from the original's checkpoint (`port_original`), from a training workdir
of ours (`release`), or written back out as the original's state dict (`export`).
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

from skipvqvc_jax import models
from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import PortError
from skipvqvc_jax.data import audio, corpus
from skipvqvc_jax.inference import convert
from skipvqvc_jax.store import checkpoints, porting
from skipvqvc_jax.training import trainers

# checkpoint/{model}_n{n_embed}_ch{channel}_{trainer}/gen, where the original's -t is a module of its
# trainer/ folder (train_normal, ...): our trainer's name is what follows `train_`.
ORIGINAL_RUN = re.compile(
  r'^(?P<model>.+)_n(?P<n_embed>\d+)_ch(?P<channel>\d+)_(train_)?(?P<trainer>.+)$'
)
EXPORTS = ('.npz', '.pt')


def from_path(checkpoint: str) -> dict:
  """{model, trainer, n_embed, channel} that the original's checkpoint path names (those it knows)."""
  match = ORIGINAL_RUN.match(os.path.basename(os.path.dirname(os.path.abspath(checkpoint))))
  if not match:
    return {}
  found = dict(n_embed=int(match['n_embed']), channel=int(match['channel']))
  if match['model'] in models.names('voice_conversion'):
    found['model'] = match['model']
  if match['trainer'] in trainers.TRAINERS:
    found['trainer'] = match['trainer']
  return found


def read_stats(files: list[str] | None, trainer: str, tmp_dir: str) -> dict[str, str]:
  """{stats.npz: a file of our format} for a trainer that needs statistics (converted from the
  original's two .npy files into tmp_dir); {} for one that does not."""
  if not trainers.spec(trainer).uses_stats:
    if files:
      raise PortError(f'--stats: the {trainer} trainer reads no statistics; leave --stats out')
    return {}
  if not files:
    raise PortError(
      f'the {trainer} trainer normalises with its training corpus statistics: give --stats='
      f"stats.npz (skipvqvc-preprocess wrote it) or --stats=MEAN.npy,STD.npy (the original's)"
    )
  if len(files) == 1:
    trainers.load_stats(files[0], trainer)  # refuses a file that is not statistics
    return {corpus.STATS_FILE: files[0]}
  if len(files) != 2:
    raise PortError('--stats: one stats.npz, or two files MEAN.npy,STD.npy')
  arrays = {}
  for key, path in zip(('mean', 'std'), files):
    if not os.path.isfile(path):
      raise PortError(f'--stats: {path}: no such file')
    arrays[key] = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
  path = os.path.join(tmp_dir, corpus.STATS_FILE)
  np.savez(path, **arrays)
  trainers.load_stats(path, trainer)
  return {corpus.STATS_FILE: path}


def port_original(
  checkpoint: str,
  out: str,
  model: str | None = None,
  trainer: str | None = None,
  stats: list[str] | None = None,
  channel: int | None = None,
  n_embed: int | None = None,
  gru_init: str = 'normal',
  prefix: str = '',
) -> dict:
  """The original's checkpoint -> a model directory at `out` that converts; returns what was
  written. Arguments as the flags; model and trainer default to what the checkpoint's path names."""
  if not os.path.isfile(checkpoint):
    raise PortError(f'{checkpoint}: no such file')
  named = from_path(checkpoint)
  name = model or named.get('model')
  if name is None:
    raise PortError(
      f"{checkpoint}: which model is it? Its path is not the original's checkpoint/MODEL_nN_chC_"
      f"TRAINER/gen: give --model (the original's -m), e.g. --model=vqvc+"
    )
  state_dict = porting.read_state_dict(checkpoint, prefix)
  size = models.get_class(name).sizes_from_torch(state_dict)
  conversion, files = None, {}
  with tempfile.TemporaryDirectory() as tmp:
    if name in models.names('voice_conversion'):
      size.update(
        channel=channel or size['channel'], n_embed=n_embed or size['n_embed'], gru_init=gru_init
      )
      trainer = trainer or named.get('trainer')
      if trainer is None:
        fits = [
          t.name
          for t in trainers.TRAINERS.values()
          if t.multi_scale == models.get_class(name).multi_scale
        ]
        raise PortError(
          f'{checkpoint}: which trainer trained it? Its normalisation is part of the model and the '
          f"file does not say: give --trainer, one of {', '.join(fits)} (the original's -t)"
        )
      trainers.spec(trainer).check_model(models.get_class(name))
      files = read_stats(stats, trainer, tmp)
      conversion = convert.Settings(trainer, audio.FeatureParams()).to_json()
    ported = porting.load_state_dict(models.build(name, **size), state_dict)
    checkpoints.save_model(out, ported, conversion, files)
  return dict(model=name, **size, **({'trainer': conversion['trainer']} if conversion else {}))


def release(source: str, out: str, step: int | None = None) -> dict:
  """A training workdir (its checkpoint at `step`) -> a model directory that converts alone."""
  if not checkpoints.is_workdir(source):
    raise PortError(f'{source} is already a model directory; copy it, or export it to .pt/.npz')
  info = checkpoints.read_model_info(source)
  model = checkpoints.load(source, step)
  conversion, files = None, {}
  if info.kind == 'voice_conversion':
    settings, stats = convert.read_settings(source)
    conversion = settings.to_json()
    if trainers.spec(settings.trainer).uses_stats:
      files = {corpus.STATS_FILE: stats}
  checkpoints.save_model(out, model, conversion, files)
  return dict(model=model.name, **({'trainer': conversion['trainer']} if conversion else {}))


def export(source: str, out: str, step: int | None = None) -> dict:
  """A workdir's checkpoint at `step` (or a model directory) -> the original's state dict at `out`
  (a .pt, or an .npz of arrays)."""
  model = checkpoints.load(source, step)
  lacking = getattr(model, 'options_the_original_lacks', lambda: [])()
  if lacking:
    raise PortError(
      f"{source}: built with {', '.join(f'model.{k}' for k in lacking)}, which the original's "
      f'model does not have (its .pt would convert differently); keep it as a model directory'
    )
  state_dict = porting.export_state_dict(model)
  porting.write_state_dict(out, state_dict)
  return dict(model=model.name, tensors=len(state_dict))


def make(source: str, out: str, step: int | None = None, **original) -> dict:
  """What `skipvqvc-port --checkpoint=SOURCE --output=OUT` writes, chosen by what the two name: a workdir
  or model directory exported to a .pt/.npz `out`, or released into a model directory; the original's
  checkpoint file ported into one (`original`: port_original's keyword arguments). Returns what was
  written, with `out`."""
  if storage.isdir(source):
    written = export(source, out, step) if out.endswith(EXPORTS) else release(source, out, step)
  elif out.endswith(EXPORTS):
    raise PortError(
      f'--output={out}: a checkpoint ports into a model directory (a name without .pt)'
    )
  else:
    written = port_original(source, out, **original)
  return dict(**written, out=out)
