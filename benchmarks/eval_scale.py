"""Wall time of `main.py --mode=eval` on a VCTK-size generated test set (11 speakers x 400 utterances).

    python benchmarks/eval_scale.py [--speakers=11] [--utterances=400] [--preset=vqvc_plus.py:n64_ch64]

The test features are generated (each speaker a smooth spectral envelope of its own, frames drawn
around it, 100 to 400 frames an utterance, like VCTK's 1 to 5 s), so no corpus is needed. A workdir is
made by one training step of the preset on a few generated training speakers; then the evaluation
runs as a user runs it, in a fresh process, with Griffin-Lim, and with speaker similarity when the
eval extra (resemblyzer) is installed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def write_speakers(folder: str, speakers: int, utterances: int, prefix: str, seed: int) -> None:
  """Generated log-mels, (80, 100..400) float32 each, named {speaker}_{utterance}.npy."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  bands = np.arange(80)[:, None]
  for s in range(speakers):
    envelope = -4 + 1.5 * np.sin(bands / rng.uniform(5, 15) + rng.uniform(0, 6))
    for u in range(utterances):
      frames = int(rng.integers(100, 400))
      mel = envelope + 0.5 * rng.standard_normal((80, frames)) * np.sin(np.arange(frames) / 7) ** 2
      np.save(os.path.join(folder, f'{prefix}{s:02d}_{u:03d}.npy'), mel.astype(np.float32))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--speakers', type=int, default=11)
  parser.add_argument('--utterances', type=int, default=400)
  parser.add_argument('--preset', default='vqvc_plus.py:n64_ch64')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    write_speakers(os.path.join(tmp, 'train'), 4, 20, 'tr', seed=0)
    write_speakers(os.path.join(tmp, 'test'), args.speakers, args.utterances, 'te', seed=1)
    workdir = os.path.join(tmp, 'run')
    main_py = [sys.executable, os.path.join(ROOT, 'main.py')]
    train = subprocess.run(
      main_py
      + [
        f'--config=configs/{args.preset}',
        f'--workdir={workdir}',
        '--config.num_train_steps=1',
        f'--config.data.train_dir={tmp}/train',
        f'--config.data.test_dir={tmp}/test',
        '--config.eval_batches=1',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
    )
    if train.returncode:
      raise SystemExit(train.stderr[-3000:])
    start = time.perf_counter()
    result = subprocess.run(
      main_py + ['--mode=eval', f'--workdir={workdir}'], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode:
      raise SystemExit(result.stderr[-3000:])
    metrics = json.load(open(os.path.join(workdir, 'eval', 'step_1', 'metrics.json')))
  similarity = metrics['speaker_similarity']
  print(
    f'{args.speakers} speakers x {args.utterances} utterances ({metrics["test_utterances"]} '
    f'test utterances), {args.preset}, Griffin-Lim, {os.cpu_count()} cores: eval {seconds / 60:.1f} '
    f'min wall; speaker similarity '
    + ('included' if similarity.get('available') else f'not run ({similarity.get("why")})')
  )


if __name__ == '__main__':
  main()
