"""Preprocessing throughput: seconds of audio turned into features per second of wall time.

    python benchmarks/preprocess.py [--input=data/demo_corpus] [--workers=N] [--repeat=3]

Each repeat preprocesses the whole input into a fresh temporary folder (decode, resample, trim, STFT,
mel, write), so nothing is reused between repeats; it prints the figure for each and the best.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from skipvqvc_jax.data import preprocessing  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  here = os.path.dirname(os.path.abspath(__file__))
  parser.add_argument('--input', default=os.path.join(here, '..', 'data', 'demo_corpus'))
  parser.add_argument('--workers', type=int, default=None, help='default: all cores')
  parser.add_argument('--repeat', type=int, default=3)
  args = parser.parse_args()
  workers = args.workers or os.cpu_count()
  rates = []
  for i in range(args.repeat):
    out = tempfile.mkdtemp(prefix='skipvqvc_bench_')
    try:
      start = time.perf_counter()
      manifest = preprocessing.preprocess(
        args.input, out, workers=workers, progress=False, log=lambda _: None
      )
      wall = time.perf_counter() - start
    finally:
      shutil.rmtree(out)
    audio_seconds = manifest['totals']['train']['seconds'] + manifest['totals']['test']['seconds']
    rates.append(audio_seconds / wall)
    print(
      f'run {i + 1}: {audio_seconds:.1f} s of trimmed audio in {wall:.2f} s wall '
      f'= {rates[-1]:.1f} audio-s/s ({len(manifest["items"])} files, {workers} workers)'
    )
  print(
    f'best: {max(rates):.1f} seconds of audio per second ({workers} workers, '
    f'{os.cpu_count()} cores)'
  )


if __name__ == '__main__':
  main()
