"""Vocoder speed on this machine: real-time factor of the MelGAN generator (and of Griffin-Lim) for
10 s of audio, and training steps per second of the configs/vocoder.py presets.

    python benchmarks/vocoder.py [--vocoder=DIR] [--seconds=10] [--repeat=5]
        [--train_presets=demo,demo_hifigan_style,melgan,hifigan_style] [--train_steps=5]

Without --vocoder the generator has random weights (speed does not depend on them).
RTF = processing seconds / audio seconds; the issue's goal is <= 0.1 on 2 CPU cores.
Training: one jitted step (discriminators then generator) on random audio of the preset's batch and
segment length, median over --train_steps after one compiling step.
"""
import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from configs import vocoder as vocoder_configs  # pylint: disable=wrong-import-position
from skipvqvc_jax import audio, sharding, train, vocoders  # pylint: disable=wrong-import-position
from skipvqvc_jax.vocoders import melgan, training  # pylint: disable=wrong-import-position


def train_step_seconds(preset: str, steps: int) -> tuple[float, int, int]:
  """(median seconds per step, batch, segment samples) of a preset's train step."""
  config = vocoder_configs.get_config(preset)
  mesh = sharding.make_mesh()
  generator, discriminators = training.build_generator(config), training.build_discriminators(config)
  step_fns = training.VocoderSteps(config, generator, discriminators, mesh)
  state = train.place(training.initial_state(
      config, nnx.to_pure_dict(nnx.state(generator, nnx.Param)),
      nnx.to_pure_dict(nnx.state(discriminators, nnx.Param)), step_fns.tx), mesh)
  segment = config.data.segment_frames * config.features.hop_length
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(mesh, dict(audio=(rng.normal(0, 3000, (config.batch_size, 1, segment))
                                                  .astype(np.float32))))
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step_fns.train_step(state, batch)
    jax.block_until_ready(metrics)
    if i:
      times.append(time.perf_counter() - start)
  return statistics.median(times), config.batch_size, segment


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vocoder', default=None)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--repeat', type=int, default=5)
  parser.add_argument('--train_presets', default='demo,demo_hifigan_style,melgan,hifigan_style')
  parser.add_argument('--train_steps', type=int, default=5)
  args = parser.parse_args()
  params = audio.FeatureParams()
  frames = int(args.seconds * params.sample_rate / params.hop_length)
  mel = np.random.default_rng(0).normal(-4, 1.5, (params.n_mels, frames)).astype(np.float32)
  candidates = {
      'melgan': (vocoders.get(args.vocoder) if args.vocoder
                 else vocoders.NeuralVocoder(melgan.MelGANGenerator())),
      'griffin_lim (32 it.)': vocoders.get('griffin_lim'),
  }
  seconds = frames * params.hop_length / params.sample_rate
  print(f'{seconds:.1f} s of audio ({frames} frames), {os.cpu_count()} cores, median of {args.repeat}')
  for name, vocoder in candidates.items():
    vocoder(mel)  # compile
    times = []
    for _ in range(args.repeat):
      start = time.perf_counter()
      vocoder(mel)
      times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f'{name:22} {median * 1e3:8.1f} ms  RTF {median / seconds:.4f}')
  print(f'training, {jax.device_count()} {jax.devices()[0].platform} device(s), '
        f'median of {args.train_steps} steps')
  for preset in filter(None, args.train_presets.split(',')):
    seconds_per_step, batch, segment = train_step_seconds(preset, args.train_steps)
    print(f'{preset:22} {seconds_per_step * 1e3:8.1f} ms/step  {1 / seconds_per_step:6.2f} steps/s  '
          f'(batch {batch} x {segment} samples: {batch * segment / seconds_per_step / 22050:.2f} s '
          f'of audio per s)')


if __name__ == '__main__':
  main()
