"""The original PyTorch SkipVQVC's (and its MelGAN's) state dicts <-> our models; `.pt` files.

`load_state_dict(model, state_dict)` takes a plain `{name: array}` mapping with the original's names
(`enc.0.0.weight`, `quantize.2.embedding.weight`, `dec.blocks.0.block.3.rec.weight_ih_l0`, ...) and
returns the model with those weights; `export_state_dict(model)` goes back. The same functions take a
melgan-neurips generator state dict (`weight_g` / `weight_v` pairs) for `models.MelGANGenerator`.
`.pt` files are read and written without torch (`torch_files`).

Each model knows its own names (`torch_table()`: parameter and layout per original name), the modules
the original builds but never runs (`torch_unused`: `dec.block0` in every VQVC+ model, `quantize_speakers`
in `vqvc+_resample`; their weights are accepted and dropped) and how to read its sizes from a state dict
(`sizes_from_torch`). This module converts layouts and reads and writes files; `apps.port` is the
program (`skipvqvc-port`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import numpy as np

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import PortError
from skipvqvc_jax.core.fileio import atomic_write
from skipvqvc_jax.store import torch_files

# PyTorch layouts -> ours; each conversion is its own inverse, so the same table also exports.
LAYOUTS = {
  'same': lambda w: w,
  'conv': lambda w: np.transpose(w, (2, 1, 0)),  # (out, in/groups, k) <-> (k, in/groups, out)
  'gru': lambda w: np.transpose(w) if w.ndim == 2 else w,  # (3H, in) <-> (in, 3H); biases as is
  'linear': np.transpose,  # nn.Linear's (out, in) <-> (in, out)
  'weight_g': lambda w: w.reshape(-1) if w.ndim == 3 else w.reshape(-1, 1, 1),  # (C,1,1) <-> (C,)
}


def _is_unused(model, name: str) -> bool:
  return any(re.match(p, name) for p in model.torch_unused)


def load_state_dict(model, state_dict: Mapping[str, np.ndarray]):
  """Copies an original SkipVQVC state dict into `model` (in place) and returns it.

  Raises PortError naming any missing, unexpected or wrongly shaped keys; nothing is changed then.
  """
  table = model.torch_table()
  state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}  # DataParallel saves
  missing = sorted(set(table) - set(state_dict))
  unexpected = sorted(k for k in state_dict if k not in table and not _is_unused(model, k))
  problems = []
  if missing:
    problems.append(f'missing keys: {", ".join(missing)}')
  if unexpected:
    problems.append(f'unexpected keys: {", ".join(unexpected)}')
  converted = {}
  for name, (variable, layout) in table.items():
    if name in state_dict:
      convert = LAYOUTS[layout]
      value = convert(np.asarray(state_dict[name], dtype=np.float32))
      if value.shape != variable.shape:
        # Every layout conversion is its own inverse, so it also gives the original's shape.
        expected = convert(np.zeros(variable.shape)).shape
        problems.append(f'{name} has shape {np.shape(state_dict[name])}, expected {expected}')
      converted[name] = value
  if problems:
    raise PortError(f'state dict does not fit {model.describe()}: ' + '; '.join(problems))
  for name, (variable, _) in table.items():
    variable[...] = converted[name]
  return model


def export_state_dict(model) -> dict[str, np.ndarray]:
  """Our parameters under the original's names and layouts (unused original modules omitted)."""
  return {
    name: LAYOUTS[layout](np.asarray(variable[...]))
    for name, (variable, layout) in model.torch_table().items()
  }


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Reads an original `.pt` checkpoint (torch not needed): a bare state dict or the original's
  save_checkpoint's {'state_dict': ..., 'optimizer': ..., 'iteration': ...}."""
  try:
    return state_dict_of(torch_files.load(storage.read_bytes(path)))
  except PortError as e:
    raise PortError(f'{path} {e}') from None


def state_dict_of(obj) -> dict[str, np.ndarray]:
  """The arrays of what a `.pt` holds: a bare state dict or {'state_dict': ...}; PortError else."""
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict):
    raise PortError(f'holds a {type(obj).__name__}, not a state dict')
  return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


def read_state_dict(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """Reads a state dict from a `.pt` file (needs torch) or an `.npz` of arrays named like one."""
  if path.endswith('.npz'):
    with np.load(io.BytesIO(storage.read_bytes(path))) as data:
      return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}
  return read_torch_checkpoint(path)


def write_state_dict(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
  """Writes a state dict as `.npz` or, with torch, as a `.pt` that the original loads; atomically."""
  if path.endswith('.npz'):

    def write(tmp):
      with open(tmp, 'wb') as f:
        np.savez(f, **state_dict)

    atomic_write(path, write)
    return
  if not path.endswith('.pt'):
    raise PortError(f'{path}: write a .npz or a .pt file')
  data = torch_files.dumps(dict(state_dict))

  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(data)

  atomic_write(path, write)
