"""Loads weights of the original PyTorch SkipVQVC (and of its MelGAN vocoder) into our models.

`load_state_dict(model, state_dict)` takes a plain `{name: array}` mapping with the original's names
(`enc.0.0.weight`, `quantize.2.embedding.weight`, `dec.blocks.0.block.3.rec.weight_ih_l0`, ...) and
returns the model with those weights. Reading a `.pt` file needs torch, an optional extra:

    python -m skipvqvc_jax.port_torch CHECKPOINT.pt OUT_DIR --model=vqvc+ --channel=64 --n_embed=64

The same entry points take a melgan-neurips generator state dict (`--model=melgan`, `weight_g` /
`weight_v` pairs) for `skipvqvc_jax.vocoders.melgan.MelGANGenerator`.

And back: `export_state_dict(model)`, or

    python -m skipvqvc_jax.port_torch export SOURCE OUT.npz   # or OUT.pt, with torch

writes a model directory's or a training workdir's latest model (a vocoder trained here too) under the
original's names and layouts, for the original's scripts.

The original constructs modules that its forward pass never uses: `dec.block0` in every model and
`quantize_speakers` in `vqvc+_resample`. Their weights are accepted and dropped.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np
from flax import nnx

from skipvqvc_jax.models.layers import GBlock
from skipvqvc_jax.vocoders import melgan

# Original modules that never take part in a forward pass (see the module docstring).
_UNUSED = {
    'vqvc+': [r'dec\.block0\.'],
    'vqvc+_resample': [r'dec\.block0\.', r'quantize_speakers\.'],
}


class PortError(ValueError):
  """The state dict does not fit the model; the message names the offending keys."""


def _conv(w):  # torch (out, in/groups, k) -> flax (k, in/groups, out)
  return np.transpose(w, (2, 1, 0))


def _same(w):
  return w


def _flat_g(w):  # weight-norm g: torch (C, 1, 1) <-> ours (C,)
  return w.reshape(-1) if w.ndim == 3 else w.reshape(-1, 1, 1)


def _gru(w):  # torch (3H, in) -> ours (in, 3H); biases are unchanged
  return np.transpose(w) if w.ndim == 2 else w


def _param_table(model) -> dict[str, tuple[nnx.Variable, Callable]]:
  """Maps every original state-dict name to (our parameter, layout conversion)."""
  if isinstance(model, melgan.MelGANGenerator):
    # PyTorch keeps g as (channels, 1, 1); reshaping to our (channels,) is undone by _same's caller.
    return {name: (variable, _flat_g if name.endswith('weight_g') else _same)
            for name, variable in melgan.torch_table(model).items()}
  table: dict[str, tuple[nnx.Variable, Callable]] = {}

  def conv(prefix, module):
    table[f'{prefix}.weight'] = (module.kernel, _conv)
    table[f'{prefix}.bias'] = (module.bias, _same)

  def norm(prefix, module):
    table[f'{prefix}.weight'] = (module.scale, _same)
    table[f'{prefix}.bias'] = (module.bias, _same)

  def gblock(prefix, block: GBlock):
    conv(f'{prefix}.block.0', block.conv_in)
    norm(f'{prefix}.block.1', block.norm_in)
    rc = block.rc
    for suffix, direction in (('', rc.gru_forward), ('_reverse', rc.gru_backward)):
      for torch_name, ours in (('weight_ih', direction.w_ih), ('weight_hh', direction.w_hh),
                               ('bias_ih', direction.b_ih), ('bias_hh', direction.b_hh)):
        table[f'{prefix}.block.3.rec.{torch_name}_l0{suffix}'] = (ours, _gru)
    conv(f'{prefix}.block.3.conv', rc.conv)
    norm(f'{prefix}.block.3.gn', rc.norm)
    conv(f'{prefix}.block.4', block.conv_out)

  for s, stage in enumerate(model.enc):
    conv(f'enc.{s}.0', stage.conv_in)
    conv(f'enc.{s}.2', stage.conv_out)
  for s, quantizer in enumerate(model.quantize):
    table[f'quantize.{s}.embedding.weight'] = (quantizer.embedding, _same)
  for s, quantizer in enumerate(getattr(model, 'quantize_speakers', [])):
    table[f'quantize_speakers.{s}.embedding.weight'] = (quantizer.embedding, _same)
  for group in ('resblock', 'blocks', 'blocks_refine'):
    for j, block in enumerate(getattr(model.dec, group)):
      gblock(f'dec.{group}.{j}', block)
  return table


def _is_unused(model, name: str) -> bool:
  if isinstance(model, melgan.MelGANGenerator):
    return False
  patterns = _UNUSED.get(model.name, _UNUSED['vqvc+'])
  return any(re.match(p, name) for p in patterns)


def _describe(model) -> str:
  if isinstance(model, melgan.MelGANGenerator):
    return f'the MelGAN generator (ngf={model.ngf}, residual_layers={model.residual_layers})'
  return f'{model.name} (channel={model.channel}, n_embed={model.n_embed})'


def load_state_dict(model, state_dict: Mapping[str, np.ndarray]):
  """Copies an original SkipVQVC state dict into `model` (in place) and returns it.

  Raises PortError naming any missing, unexpected or wrongly shaped keys; nothing is changed then.
  """
  table = _param_table(model)
  state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}  # DataParallel saves
  missing = sorted(set(table) - set(state_dict))
  unexpected = sorted(k for k in state_dict if k not in table and not _is_unused(model, k))
  problems = []
  if missing:
    problems.append(f'missing keys: {", ".join(missing)}')
  if unexpected:
    problems.append(f'unexpected keys: {", ".join(unexpected)}')
  converted = {}
  for name, (variable, convert) in table.items():
    if name in state_dict:
      value = convert(np.asarray(state_dict[name], dtype=np.float32))
      if value.shape != variable.shape:
        # Every layout conversion is its own inverse, so it also gives the original's shape.
        expected = convert(np.zeros(variable.shape)).shape
        problems.append(f'{name} has shape {np.shape(state_dict[name])}, expected {expected}')
      converted[name] = value
  if problems:
    raise PortError(f'state dict does not fit {_describe(model)}: ' + '; '.join(problems))
  for name, (variable, _) in table.items():
    variable[...] = converted[name]
  return model


def export_state_dict(model) -> dict[str, np.ndarray]:
  """Our parameters under the original's names and layouts (unused original modules omitted)."""
  # Every layout conversion is its own inverse, so the import table also exports.
  return {name: convert(np.asarray(variable[...]))
          for name, (variable, convert) in _param_table(model).items()}


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
      return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
  return read_torch_checkpoint(path)


def infer_size(state_dict: Mapping[str, np.ndarray]) -> dict[str, int]:
  """channel, n_embed and in_channel of the original model that saved `state_dict`."""
  try:
    conv = np.shape(state_dict['enc.0.0.weight'])
    codebook = np.shape(state_dict['quantize.2.embedding.weight'])
  except KeyError as e:
    raise PortError(f'not a SkipVQVC state dict: no {e.args[0]}') from None
  # The coarsest content codebook has n_embed codes in every variant.
  return dict(channel=conv[0], n_embed=codebook[0], in_channel=conv[1])


def infer_melgan_size(state_dict: Mapping[str, np.ndarray]) -> dict[str, int]:
  """n_mels, ngf and residual_layers of a melgan-neurips generator state dict."""
  try:
    out_channels, n_mels, _ = np.shape(state_dict['model.1.weight_v'])
  except KeyError:
    raise PortError('not a MelGAN generator state dict: no model.1.weight_v') from None
  residual = len({k.split('.')[1] for k in state_dict if '.shortcut.' in k}) // len(melgan.RATIOS)
  return dict(n_mels=n_mels, ngf=out_channels // 2 ** len(melgan.RATIOS), residual_layers=residual)


def write_state_dict(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
  """Writes a state dict as `.npz` or, with torch, as a `.pt` that the original loads; atomically."""
  from skipvqvc_jax import corpus  # pylint: disable=import-outside-toplevel
  if path.endswith('.npz'):
    def write(tmp):
      with open(tmp, 'wb') as f:
        np.savez(f, **state_dict)
    corpus.atomic_write(path, write)
    return
  if not path.endswith('.pt'):
    raise PortError(f'{path}: write a .npz or a .pt file')
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PortError(f'{path}: writing .pt files needs torch: pip install -e ".[torch]"; or write '
                    f'a .npz') from None
  corpus.atomic_write(path, lambda tmp: torch.save(
      {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}, tmp))


def export_main(argv) -> int:
  """`python -m skipvqvc_jax.port_torch export SOURCE OUT.{npz,pt}`: ours -> the original's format."""
  import argparse, json, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  parser = argparse.ArgumentParser(
      prog='python -m skipvqvc_jax.port_torch export',
      description="Write a model as the original's PyTorch state dict (melgan-neurips' names for a "
                  'vocoder), e.g. to use a vocoder trained here in the original scripts.')
  parser.add_argument('source', help='model directory, or training workdir (its latest checkpoint)')
  parser.add_argument('out', help='.npz (no torch needed) or .pt (needs torch)')
  args = parser.parse_args(argv)
  from skipvqvc_jax import train  # pylint: disable=import-outside-toplevel
  try:
    model = train.load_any(args.source)
    state_dict = export_state_dict(model)
    write_state_dict(args.out, state_dict)
  except (PortError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(dict(model=type(model).__name__, tensors=len(state_dict), out=args.out)))
  return 0


def main(argv=None):
  import argparse, json, os, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == 'export':
    return export_main(argv[1:])
  from skipvqvc_jax import models  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax import checkpoints  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog='python -m skipvqvc_jax.port_torch',
      description='Convert an original SkipVQVC checkpoint into a skipvqvc_jax model directory '
                  '(the other way: python -m skipvqvc_jax.port_torch export SOURCE OUT.npz).')
  parser.add_argument('checkpoint', help='original .pt checkpoint (needs torch) or .npz of arrays')
  parser.add_argument('out_dir', help='directory to write (must not exist yet)')
  parser.add_argument('--model', required=True, choices=models.names() + ['melgan'])
  parser.add_argument('--channel', type=int, help='default: read from the weights')
  parser.add_argument('--n_embed', type=int, help='default: read from the weights')
  parser.add_argument('--gru_init', choices=['normal', 'zeros'], default='normal',
                      help="GRU initial state: the original's N(0, 1) noise, or zeros")
  parser.add_argument('--prefix', default='', help='key prefix to strip in an .npz (e.g. param/)')
  args = parser.parse_args(argv)
  try:
    if not os.path.exists(args.checkpoint):
      raise PortError(f'{args.checkpoint}: no such file')
    state_dict = read_state_dict(args.checkpoint, args.prefix)
    if args.model == 'melgan':
      size = infer_melgan_size(state_dict)
      model = load_state_dict(melgan.MelGANGenerator(**size), state_dict)
    else:
      size = infer_size(state_dict)
      size['channel'] = args.channel or size['channel']
      size['n_embed'] = args.n_embed or size['n_embed']
      size['gru_init'] = args.gru_init
      model = load_state_dict(models.build(args.model, **size), state_dict)
    checkpoints.save_model(args.out_dir, model)
  except (PortError, FileExistsError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(dict(model=args.model, **size, out_dir=args.out_dir)))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
