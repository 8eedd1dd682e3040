"""Real-time factor of the MelGAN generator (and of Griffin-Lim) on this machine for 10 s of audio.

    python benchmarks/vocoder.py [--vocoder=DIR] [--seconds=10] [--repeat=5]

Without --vocoder the generator has random weights (speed does not depend on them).
RTF = processing seconds / audio seconds; the issue's goal is <= 0.1 on 2 CPU cores.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from skipvqvc_jax import audio, vocoders  # pylint: disable=wrong-import-position
from skipvqvc_jax.vocoders import melgan  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vocoder', default=None)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--repeat', type=int, default=5)
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


if __name__ == '__main__':
  main()
