"""Loads weights of the original PyTorch SkipVQVC (and of its MelGAN vocoder) into our models.

`load_state_dict(model, state_dict)` takes a plain `{name: array}` mapping with the original's names
(`enc.0.0.weight`, `quantize.2.embedding.weight`, `dec.blocks.0.block.3.rec.weight_ih_l0`, ...) and
returns the model with those weights. Reading a `.pt` file needs torch, an optional extra:

    python -m skipvqvc_jax.port_torch CHECKPOINT.pt OUT_DIR --model=vqvc+ --channel=64 --n_embed=64

The same entry points take a melgan-neurips generator state dict (`--model=melgan`, `weight_g` /
`weight_v` pairs) for `skipvqvc_jax.models.MelGANGenerator`.

And back: `export_state_dict(model)`, or

    python -m skipvqvc_jax.port_torch export SOURCE OUT.npz   # or OUT.pt, with torch

writes a model directory's or a training workdir's latest model (a vocoder trained here too) under the
original's names and layouts, for the original's scripts.

Each model knows its own names (`torch_table()`: parameter and layout per original name), the modules
the original builds but never runs (`torch_unused`: `dec.block0` in every VQVC+ model, `quantize_speakers`
in `vqvc+_resample`; their weights are accepted and dropped) and how to read its sizes from a state dict
(`sizes_from_torch`). This module converts layouts and reads and writes files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping

import numpy as np

from skipvqvc_jax import checkpoints, models
from skipvqvc_jax.errors import PortError, UserError
from skipvqvc_jax.fileio import atomic_write

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
  """Reads an original `.pt` checkpoint: a bare state dict or the original's {'state_dict': ...}."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PortError(f'{path}: reading .pt files needs torch: pip install -e ".[torch]"') from None
  obj = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']  # the original's save_checkpoint also stores optimizer and iteration
  return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, 'detach')}


def read_state_dict(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """Reads a state dict from a `.pt` file (needs torch) or an `.npz` of arrays named like one."""
  if path.endswith('.npz'):
    with np.load(path) as data:
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
  try:
    import torch  # pylint: disable=import-outside-toplevel  (an optional extra)
  except ImportError:
    raise PortError(
      f'{path}: writing .pt files needs torch: pip install -e ".[torch]"; or write a .npz'
    ) from None
  atomic_write(
    path,
    lambda tmp: torch.save(
      {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}, tmp
    ),
  )


def _fail(error: Exception) -> int:
  print(f'error: {error}', file=sys.stderr)
  return 1


def export_main(argv) -> int:
  """`python -m skipvqvc_jax.port_torch export SOURCE OUT.{npz,pt}`: ours -> the original's format."""
  parser = argparse.ArgumentParser(
    prog='python -m skipvqvc_jax.port_torch export',
    description="Write a model as the original's PyTorch state dict (melgan-neurips' names for a "
    'vocoder), e.g. to use a vocoder trained here in the original scripts.',
  )
  parser.add_argument('source', help='model directory, or training workdir (its latest checkpoint)')
  parser.add_argument('out', help='.npz (no torch needed) or .pt (needs torch)')
  args = parser.parse_args(argv)
  try:
    model = checkpoints.load(args.source)
    state_dict = export_state_dict(model)
    write_state_dict(args.out, state_dict)
  except UserError as e:
    return _fail(e)
  print(json.dumps(dict(model=model.name, tensors=len(state_dict), out=args.out)))
  return 0


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == 'export':
    return export_main(argv[1:])
  portable = models.names('voice_conversion') + models.names('vocoder')
  parser = argparse.ArgumentParser(
    prog='python -m skipvqvc_jax.port_torch',
    description='Convert an original SkipVQVC checkpoint into a skipvqvc_jax model directory '
    '(the other way: python -m skipvqvc_jax.port_torch export SOURCE OUT.npz).',
  )
  parser.add_argument('checkpoint', help='original .pt checkpoint (needs torch) or .npz of arrays')
  parser.add_argument('out_dir', help='directory to write (must not exist yet)')
  parser.add_argument('--model', required=True, choices=portable)
  parser.add_argument('--channel', type=int, help='VQVC+: default: read from the weights')
  parser.add_argument('--n_embed', type=int, help='VQVC+: default: read from the weights')
  parser.add_argument(
    '--gru_init',
    choices=['normal', 'zeros'],
    default='normal',
    help="VQVC+: GRU initial state: the original's N(0, 1) noise, or zeros",
  )
  parser.add_argument('--prefix', default='', help='key prefix to strip in an .npz (e.g. param/)')
  args = parser.parse_args(argv)
  try:
    if not os.path.exists(args.checkpoint):
      raise PortError(f'{args.checkpoint}: no such file')
    state_dict = read_state_dict(args.checkpoint, args.prefix)
    size = models.get_class(args.model).sizes_from_torch(state_dict)
    if args.model in models.names('voice_conversion'):
      size.update(
        channel=args.channel or size['channel'],
        n_embed=args.n_embed or size['n_embed'],
        gru_init=args.gru_init,
      )
    model = load_state_dict(models.build(args.model, **size), state_dict)
    checkpoints.save_model(args.out_dir, model)
  except UserError as e:
    return _fail(e)
  print(json.dumps(dict(model=args.model, **size, out_dir=args.out_dir)))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
