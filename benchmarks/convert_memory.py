"""Peak memory (and wall time) of converting one long source file, each in a fresh process.

    python benchmarks/convert_memory.py [--minutes=10] [--preset=vqvc_plus.py:n64_ch64]

The source is the bundled demo corpus' utterances end to end, cut to --minutes; conversion runs as
`Converter.convert_file` does for `main.py --mode=convert` (features, model, Griffin-Lim, wav), with a
model of random weights (memory does not depend on them). Peak = the process's maximum resident set.
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from common import ROOT, preset_config, untrained_converter


def measure(source: str, target: str, preset: str) -> dict:
  converter = untrained_converter(preset_config(preset))
  out = os.path.join(os.path.dirname(source), 'out.wav')
  start = time.perf_counter()
  converter.convert_file(source, [target], out)
  seconds = time.perf_counter() - start
  return dict(
    peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    seconds=seconds,
    out_bytes=os.path.getsize(out),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--minutes', type=float, default=10.0)
  parser.add_argument('--preset', default='vqvc_plus.py:n64_ch64')
  parser.add_argument('--one', nargs=2, help=argparse.SUPPRESS)  # internal: source, target
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(*args.one, args.preset)))
    return
  import numpy as np  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.data import audio  # pylint: disable=import-outside-toplevel

  files = sorted(glob.glob(os.path.join(ROOT, 'data', 'demo_corpus', '*', '*.ogg')))
  samples, parts = int(args.minutes * 60 * 22050), []
  while sum(len(p) for p in parts) < samples:
    parts.append(audio.load(files[len(parts) % len(files)]))
  with tempfile.TemporaryDirectory() as tmp:
    source = os.path.join(tmp, 'long.wav')
    sf.write(source, np.concatenate(parts)[:samples], 22050)
    result = subprocess.run(
      [sys.executable, __file__, f'--preset={args.preset}', '--one', source, files[0]],
      capture_output=True,
      text=True,
      check=False,
    )
    if result.returncode:
      raise SystemExit(result.stderr[-3000:])
    r = json.loads(result.stdout.strip().splitlines()[-1])
  print(
    f'{args.minutes:.1f} min source, {args.preset}, Griffin-Lim: peak {r["peak_mib"]:.0f} MiB '
    f'resident, {r["seconds"]:.1f} s ({os.cpu_count()} cores)'
  )


if __name__ == '__main__':
  main()
