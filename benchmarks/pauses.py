"""What evaluation and checkpoint pauses cost a training budget: steps/s between pauses and overall, per
preset, with the periods as set (pause_fraction=0, the original's cadence) and sized by the loop
(the default, pause_fraction=0.1), each run side by side in this one process' machine state.

    python benchmarks/pauses.py --features=FEATURES/train [--seconds=120 | --steps=N] [--out=pauses.json]
        [--presets=vqvc_plus.py:n64_ch64,vqvc_plus_multi.py:n64_ch64,vqvc_plus_multi_simple.py:n64_ch64]

Each run is `main.py --mode=train` stopped by SIGTERM after --seconds of wall time (compilation
included, as a user's budget is), in a fresh workdir; with --steps, each run trains that many steps
instead (a measure that a busy machine cannot end before its first rate). "between" is the steps'
own rate (the median over the log intervals, logging included, pauses not), "overall" the steps
after the first compilation over the wall time since it, pauses included, the compilations of new
shapes later not ("compile s": the multi-scale trainers' stretched lengths, a one-off cost no cadence
avoids): the share of the budget that went to training is their ratio.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

from common import ROOT, write_rows

PRESETS = 'vqvc_plus.py:n64_ch64,vqvc_plus_multi.py:n64_ch64,vqvc_plus_multi_simple.py:n64_ch64'
FRACTIONS = (0.0, 0.1)


def train_for(preset, fraction, features, seconds, workdir, flags=(), steps=0) -> dict:
  """The train_summary.json of `preset` (with more main.py `flags`) trained for `seconds`, or for
  `steps` steps (then `seconds` bounds the run)."""
  args = [
    sys.executable,
    os.path.join(ROOT, 'main.py'),
    f'--config=configs/{preset}',
    f'--config.data.train_dir={features}',
    f'--config.num_train_steps={steps or 100_000_000}',
    f'--config.pause_fraction={fraction}',
    f'--workdir={workdir}',
    *flags,
  ]
  process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    _, stderr = process.communicate(timeout=seconds)
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGTERM)  # a preemption: the loop saves and writes its summary
    _, stderr = process.communicate(timeout=600)
  summary_file = os.path.join(workdir, 'train_summary.json')
  if not os.path.isfile(summary_file):
    raise SystemExit(f'{preset} wrote no summary:\n{stderr.decode()[-3000:]}')
  with open(summary_file) as f:
    return json.load(f)


def row(preset: str, fraction: float, summary: dict) -> dict:
  between, overall = summary['steps_per_sec_between'], summary['steps_per_sec_overall']
  cadence = summary['cadence']
  return dict(
    preset=preset,
    pause_fraction=fraction,
    eval_every_steps=cadence['eval_every_steps'],
    checkpoint_every_steps=cadence['checkpoint_every_steps'],
    steps=summary['step'],
    between=between,
    overall=overall,
    training_share=overall / between if between and overall else None,
    compile_seconds=summary['compile_seconds'],
  )


def _figure(value, width: int, decimals: int) -> str:
  """A rate, or '-' where the run ended before one was measured (--seconds too short for it)."""
  return f'{value:{width}.{decimals}f}' if value is not None else f'{"-":>{width}}'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--features', required=True, help='a training features folder')
  parser.add_argument('--presets', default=PRESETS)
  parser.add_argument('--seconds', type=float, default=120.0)
  parser.add_argument(
    '--steps', type=int, default=0, help='train this many steps instead (--seconds bounds each run)'
  )
  parser.add_argument(
    '--fractions', default=','.join(map(str, FRACTIONS)), help='pause_fraction values to run'
  )
  parser.add_argument(
    '--flag', action='append', default=[], help='one more main.py flag (repeatable)'
  )
  parser.add_argument('--out', default='', help='also write the rows as JSON here')
  args = parser.parse_args()
  rows = []
  print(
    f'{"preset":34} {"fraction":>8} {"periods":>11} {"steps":>7} {"between":>8} '
    f'{"overall":>8} {"share":>6} {"compile s":>9}'
  )
  with tempfile.TemporaryDirectory() as scratch:
    for preset in args.presets.split(','):
      for fraction in (float(f) for f in args.fractions.split(',')):
        workdir = os.path.join(scratch, f'{preset.replace(":", "_")}_{fraction}')
        rows.append(
          row(
            preset,
            fraction,
            train_for(
              preset, fraction, args.features, args.seconds, workdir, args.flag, args.steps
            ),
          )
        )
        r = rows[-1]
        periods = f'{r["eval_every_steps"]}/{r["checkpoint_every_steps"]}'
        print(
          f'{preset:34} {fraction:8.2f} {periods:>11} {r["steps"]:7d} {_figure(r["between"], 8, 1)} '
          f'{_figure(r["overall"], 8, 1)} {_figure(r["training_share"], 6, 2)} '
          f'{r["compile_seconds"]:9.1f}',
          flush=True,
        )
  write_rows(args.out, rows)


if __name__ == '__main__':
  main()
