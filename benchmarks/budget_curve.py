"""The budget curve: what a training run's checkpoints score against the wall time that made them.

    python benchmarks/budget_curve.py --workdir=RUN --minutes=5,10,15,25 [--eval_pairs=20] [--out=F]

For each minute mark it takes the kept checkpoint saved nearest that much wall time after the run
started (the run's config.json is written at its start; a checkpoint folder's time is its save),
evaluates it as `skipvqvc-eval --step=N` does (reusing an evaluation already in eval/step_N), and
prints one row: minutes, step, word error rates (converted / reconstructed / the unconverted ceiling),
the same over the pairs whose ceiling is at most 0.4 (voices the recogniser understands through the
vocoder), the target named among the test speakers, similarity to the target and the log-mel
cepstral distortion. Keep enough checkpoints for the marks (`--config.keep_checkpoints=100`).
Needs the `.[eval]` extra for the speaker and word figures.
"""

import argparse
import json
import os

import numpy as np
from common import write_rows

EASY_CEILING = 0.4  # pairs whose unconverted source the recogniser gets at least this right


def checkpoint_minutes(workdir: str) -> dict[int, float]:
  """{step: minutes after the run's start} of the kept checkpoints."""
  start = os.path.getmtime(os.path.join(workdir, 'config.json'))
  folder = os.path.join(workdir, 'checkpoints')
  return {
    int(d): (os.path.getmtime(os.path.join(folder, d)) - start) / 60
    for d in os.listdir(folder)
    if d.isdigit()
  }


def nearest(minutes_of: dict[int, float], mark: float) -> int:
  return min(minutes_of, key=lambda step: abs(minutes_of[step] - mark))


def metrics_of(workdir: str, step: int, pairs: int) -> tuple[dict, list]:
  folder = os.path.join(workdir, 'eval', f'step_{step}')
  if not os.path.isfile(os.path.join(folder, 'metrics.json')):
    from skipvqvc_jax.evaluation import evaluate  # pylint: disable=import-outside-toplevel

    evaluate.run(workdir, step, num_pairs=pairs)
  with open(os.path.join(folder, 'metrics.json')) as f:
    metrics = json.load(f)
  with open(os.path.join(folder, 'pairs.json')) as f:
    return metrics, json.load(f)


def row(minutes: float, step: int, metrics: dict, pairs: list) -> dict:
  wer = (metrics.get('intelligibility') or {}).get('wer') or {}
  similarity = metrics.get('speaker_similarity') or {}
  easy = [p['wer'] for p in pairs if p.get('wer') and p['wer']['unconverted'] <= EASY_CEILING]
  mean = lambda key: float(np.mean([w[key] for w in easy])) if easy else None
  return dict(
    minutes=round(minutes, 1),
    step=step,
    wer=wer,
    easy_pairs=len(easy),
    easy_wer={k: mean(k) for k in ('converted', 'reconstructed', 'unconverted')},
    named=similarity.get('identified_as_target'),
    to_target=similarity.get('to_target'),
    lmcd_db=(metrics.get('conversion') or {}).get('lmcd_dtw_db'),
  )


def _cell(value, spec='.2f'):
  return '-' if value is None else format(value, spec)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--minutes', default='5,10,15,25', help='comma-separated minute marks')
  parser.add_argument('--eval_pairs', type=int, default=20)
  parser.add_argument('--out', default='', help='also write the rows as JSON here')
  args = parser.parse_args()
  minutes_of = checkpoint_minutes(args.workdir)
  if not minutes_of:
    raise SystemExit(f'{args.workdir} has no checkpoints')
  steps = []
  for mark in (float(m) for m in args.minutes.split(',')):
    step = nearest(minutes_of, mark)
    if step not in steps:
      steps.append(step)
  rows = []
  print(
    'minutes   step   WER conv/recon/ceiling   (ceiling<=0.4: n, conv/recon/ceiling)   named  sim   LMCD'
  )
  for step in sorted(steps):
    rows.append(row(minutes_of[step], step, *metrics_of(args.workdir, step, args.eval_pairs)))
    r, w, e = rows[-1], rows[-1]['wer'], rows[-1]['easy_wer']
    print(
      f'{r["minutes"]:7.1f} {step:6d}   {_cell(w.get("converted"))} / {_cell(w.get("reconstructed"))} / '
      f'{_cell(w.get("unconverted"))}       {r["easy_pairs"]:2d}, {_cell(e["converted"])} / '
      f'{_cell(e["reconstructed"])} / {_cell(e["unconverted"])}            {_cell(r["named"])}   '
      f'{_cell(r["to_target"], ".3f")} {_cell(r["lmcd_db"])}',
      flush=True,
    )
  write_rows(args.out, rows)


if __name__ == '__main__':
  main()
