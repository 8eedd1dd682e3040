"""The original PyTorch SkipVQVC and ours, timed side by side in one run: train step and inference.

    python benchmarks/compare_original.py --original=PATH/TO/SkipVQVC [--presets=n64_ch64,n512_ch512]
                                          [--steps=20] [--warmup=5] [--threads=2]

PATH is a local clone of the original repository (never part of this one). Needs torch; without it, or
without the path, it says so and exits. Both sides: float32, global batch 8 x 80 x 128, the same number
of CPU threads, each side in a fresh process of its own. The original's step is its trainer's: `model(audio)` (which also decodes a speaker-
shuffled copy), L1 + 0.1 latent loss (for the multi-scale models the trainers' three-scale L1 on the
simple-normalised input), backward, clip_grad_norm_(3), Adam. Ours is the jitted train step of
`skipvqvc_jax.training.loop` with the same trainer. Inference: encode + decode of one 1 x 80 x 512 utterance.
Presets: n64_ch64, n128_ch128, n512_ch512 (vqvc+ / vqvc+_resample), multi_simple_n64_ch64,
multi_simple_n128_ch512, multi_n64_ch64, multi_n64_ch512.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from common import median_seconds, preset_config

PRESETS = {  # name -> (our config file, its preset, original model folder)
  'n64_ch64': ('vqvc_plus', 'n64_ch64', 'vqvc+'),
  'n128_ch128': ('vqvc_plus', 'n128_ch128', 'vqvc+'),
  'n512_ch512': ('vqvc_plus_resample', 'n512_ch512', 'vqvc+_resample'),
  'multi_simple_n64_ch64': ('vqvc_plus_multi_simple', 'n64_ch64', 'vqvc+_multi_simple'),
  'multi_simple_n128_ch512': ('vqvc_plus_multi_simple', 'n128_ch512', 'vqvc+_multi_simple'),
  'multi_n64_ch64': ('vqvc_plus_multi', 'n64_ch64', 'vqvc+_multi'),
  'multi_n64_ch512': ('vqvc_plus_multi', 'n64_ch512', 'vqvc+_multi'),
}


def time_original(original, folder, channel, n_embed, steps, warmup):
  import torch  # pylint: disable=import-outside-toplevel

  torch.Tensor.cuda = lambda self, *a, **k: self  # the original calls .cuda() inside Quantize
  torch.nn.Module.cuda = lambda self, *a, **k: self
  spec = importlib.util.spec_from_file_location(
    'original_vq_model', os.path.join(original, 'model', folder, 'vq_model.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  torch.manual_seed(0)
  model = module.VC_MODEL(in_channel=80, channel=channel, n_embed=n_embed)
  opt = torch.optim.Adam(model.parameters())
  audio = torch.from_numpy(np.random.default_rng(0).normal(-4, 2, (8, 80, 128)).astype(np.float32))
  multi = folder.startswith('vqvc+_multi')
  if multi:  # train_simple_normalize_multi.py: normalised input, targets per scale
    audio = (audio * 25 + 50) / 50
    targets = [audio[:, :20, ::4], audio[:, :40, ::2], audio]

  def step():
    out, _, _, _, latent, _ = model(audio)
    recon = (
      sum(torch.nn.functional.l1_loss(o, t) for o, t in zip(out, targets))
      if multi
      else torch.nn.functional.l1_loss(out, audio)
    )
    loss = recon + 0.1 * latent.mean()
    model.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 3)
    opt.step()

  utterance = torch.from_numpy(
    np.random.default_rng(1).normal(-4, 2, (1, 80, 512)).astype(np.float32)
  )

  def infer():
    with torch.no_grad():
      encoding = model.encode(utterance)  # (q, sp, std, ...) in every model timed here
      model.decode(*encoding[:3])

  return median_seconds(step, steps, warmup), median_seconds(infer, steps, warmup)


def time_ours(config_file, preset, steps, warmup):
  import jax  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.inference import convert
  from skipvqvc_jax.store import checkpoints  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.training import sharding, trainers
  from skipvqvc_jax.training.tasks import voice_conversion  # pylint: disable=import-outside-toplevel

  config = preset_config(f'{config_file}.py:{preset}')
  trainer = trainers.get(config.trainer)
  mesh = sharding.make_mesh()
  model = voice_conversion.build_model(config)
  steps_ = voice_conversion.Steps(config, model, trainer, mesh)
  state = sharding.place(
    voice_conversion.make_state(checkpoints.params_of(model), steps_.tx, config.seed), mesh
  )
  mel = np.random.default_rng(0).normal(-4, 2, (8, 80, 128)).astype(np.float32)
  batch = sharding.global_batch(mesh, dict(mel=mel))
  box = [state]

  def step():
    box[0], metrics = steps_.train_step(box[0], batch)
    jax.block_until_ready(metrics)

  converter = convert.Converter(model, convert.Settings.from_config(config), trainer)
  utterance = np.random.default_rng(1).normal(-4, 2, (80, 512)).astype(np.float32)
  target = converter.speaker([utterance])
  infer = lambda: converter.convert_mel(utterance, target)
  return median_seconds(step, steps, warmup), median_seconds(infer, steps, warmup)


def run_side(args) -> None:
  """One side of one preset, in this process: prints {"step": s, "infer": s}."""
  config_file, our_preset, folder = PRESETS[args.preset]
  n_embed, channel = (int(part[1:]) for part in our_preset.replace('_ch', '_c').split('_')[:2])
  # The recurrent models at ch512 take over a second a step: fewer steps there.
  slow = channel >= 512 and not folder.startswith('vqvc+_multi')
  steps, warmup = (
    (max(3, args.steps // 5), min(args.warmup, 2)) if slow else (args.steps, args.warmup)
  )
  if args.side == 'original':
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(args.threads)
    step, infer = time_original(args.original, folder, channel, n_embed, steps, warmup)
  else:
    step, infer = time_ours(config_file, our_preset, steps, warmup)
  print(json.dumps(dict(step=step, infer=infer)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--original', default=None, help='local clone of ericwudayi/SkipVQVC')
  parser.add_argument('--presets', default='n64_ch64,n512_ch512')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--side', choices=['original', 'ours'], help=argparse.SUPPRESS)
  parser.add_argument('--preset', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    return run_side(args)
  if importlib.util.find_spec('torch') is None:
    print('skipped: torch is not installed (pip install -e ".[torch]")')
    return
  if not args.original or not os.path.isfile(
    os.path.join(args.original, 'model', 'vqvc+', 'vq_model.py')
  ):
    print(
      f'skipped: --original={args.original} is not a clone of SkipVQVC (no model/vqvc+/vq_model.py)'
    )
    return
  print(
    f'{"preset":24} {"original ms/step":>16} {"ours ms/step":>12} {"speed-up":>8} | '
    f'{"original infer ms":>17} {"ours infer ms":>13} {"speed-up":>8}'
  )
  for preset in args.presets.split(','):
    # Each side in a fresh process, one after the other: neither runs beside the other's idle
    # thread pools (torch's OpenMP workers spin after each op), and neither inherits its memory.
    side = lambda name: json.loads(
      subprocess.run(
        [
          sys.executable,
          __file__,
          f'--side={name}',
          f'--preset={preset}',
          f'--original={args.original}',
          f'--steps={args.steps}',
          f'--warmup={args.warmup}',
          f'--threads={args.threads}',
        ],
        check=True,
        capture_output=True,
        text=True,
      )
      .stdout.strip()
      .splitlines()[-1]
    )
    original, ours = side('original'), side('ours')
    o_step, o_infer, j_step, j_infer = (
      original['step'],
      original['infer'],
      ours['step'],
      ours['infer'],
    )
    print(
      f'{preset:24} {o_step * 1e3:>16.1f} {j_step * 1e3:>12.1f} {o_step / j_step:>7.2f}x | '
      f'{o_infer * 1e3:>17.1f} {j_infer * 1e3:>13.1f} {o_infer / j_infer:>7.2f}x',
      flush=True,
    )


if __name__ == '__main__':
  main()
