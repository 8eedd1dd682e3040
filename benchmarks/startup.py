"""Wall time of one-file conversion from a fresh process: the first (compiling) and the second (the
persistent compilation cache on) and, for comparison, a second with --nocompilation_cache.

    python benchmarks/startup.py [--preset=vqvc_plus.py:demo] [--seconds=3]

It trains one step of the preset on a few demo utterances (a workdir to convert with; speed does not
depend on the weights), then runs `main.py --mode=convert` on a --seconds long source as a user would,
each in a fresh process with an empty compilation cache folder of its own at the start.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
DEMO = os.path.join(ROOT, 'data', 'demo_corpus')


def run(args, **kwargs) -> float:
  start = time.perf_counter()
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, 'main.py'), *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    **kwargs,
  )
  seconds = time.perf_counter() - start
  if result.returncode:
    raise SystemExit(f'main.py {" ".join(args)} failed:\n{result.stderr[-3000:]}')
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='vqvc_plus.py:demo')
  parser.add_argument('--seconds', type=float, default=3.0)
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  from skipvqvc_jax.data import audio  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, 'corpus')
    for speaker in ('awb', 'slt', 'kal'):
      os.makedirs(os.path.join(corpus, speaker))
      for i in range(1, 5):
        name = f'{speaker}_{i:03d}.ogg'
        shutil.copy(os.path.join(DEMO, speaker, name), os.path.join(corpus, speaker, name))
    workdir = os.path.join(tmp, 'run')
    train_s = run(
      [
        f'--config=configs/{args.preset}',
        f'--workdir={workdir}',
        f'--config.data.train_dir={corpus}',
        '--config.data.num_test_speakers=1',
        '--config.num_train_steps=1',
        '--config.batch_size=2',
        '--config.eval_batches=1',
        f'--compilation_cache_dir={tmp}/train_cache',
      ]
    )
    wave = np.concatenate(
      [audio.load(os.path.join(DEMO, 'rms', f'rms_{i:03d}.ogg')) for i in range(1, 4)]
    )[: int(args.seconds * 22050)]
    source = os.path.join(tmp, 'source.wav')
    sf.write(source, wave, 22050)
    convert = [
      '--mode=convert',
      f'--workdir={workdir}',
      f'--source={source}',
      f'--target={os.path.join(DEMO, "slt", "slt_010.ogg")}',
      f'--output={os.path.join(tmp, "out.wav")}',
      '--overwrite',  # the same conversion again, as a user repeating it
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
    cache = f'--compilation_cache_dir={tmp}/cache'
    first = run(convert + [cache], env=env)
    second = run(convert + [cache], env=env)
    uncached = run(convert + ['--nocompilation_cache'], env=env)
    entries = len(os.listdir(os.path.join(tmp, 'cache')))
  print(
    f'{args.preset}, a {args.seconds:.0f} s source, {os.cpu_count()} cores '
    f'(workdir: one training step, {train_s:.0f} s)'
  )
  print(f'first conversion (empty cache):        {first:6.1f} s wall')
  print(f'second conversion (cache, {entries:3d} entries): {second:6.1f} s wall')
  print(f'second conversion, --nocompilation_cache: {uncached:6.1f} s wall')


if __name__ == '__main__':
  main()
