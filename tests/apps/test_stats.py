"""skipvqvc-stats: per-band statistics of an existing features folder by either definition (ours,
every frame weighs the same; the original's, every utterance does), on features whose statistics are
known, written where training finds them and read by the mean/std trainers."""

import subprocess
import sys

import numpy as np
import pytest

from skipvqvc_jax.data import corpus
from skipvqvc_jax.training import trainers


def _stats_cli(*args):
  return subprocess.run(
    [sys.executable, '-c', 'from skipvqvc_jax.apps import stats; stats.run()', *args],
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.fixture
def features(tmp_path):
  """The original's layout (a flat folder of .npy, no manifest): utterance a is 100 frames of
  1 +- 1 in every band, b 300 frames of 3 +- 1 (so each has std 1)."""
  folder = tmp_path / 'mel.melgan'
  folder.mkdir()
  for name, centre, frames in (('p225_001', 1.0, 100), ('p226_001', 3.0, 300)):
    signs = np.where(np.arange(frames) % 2 == 0, -1.0, 1.0)
    np.save(folder / f'{name}.npy', np.tile(centre + signs, (80, 1)).astype(np.float32))
  return folder


def test_both_definitions_on_features_whose_statistics_are_known(features, tmp_path):
  result = _stats_cli(str(features))
  assert result.returncode == 0, result.stderr
  written = tmp_path / 'stats.npz'  # beside the folder: where training looks by default
  assert str(written) in result.stdout
  mean, std = trainers.load_stats(str(written))
  # Every frame weighs the same: 400 frames, mean 2.5, E[x^2] = (100*2 + 300*10) / 400 = 8.
  np.testing.assert_allclose(mean, 2.5, rtol=1e-6)
  np.testing.assert_allclose(std, np.sqrt(8 - 2.5**2), rtol=1e-6)
  with np.load(written) as stats:
    assert int(stats['frames']) == 400 and str(stats['definition']) == 'frames'

  # The file is kept unless asked: nothing already written is lost.
  again = _stats_cli(str(features), '--definition=per_utterance')
  assert again.returncode != 0 and '--overwrite' in again.stderr.strip().splitlines()[-1]
  np.testing.assert_allclose(trainers.load_stats(str(written))[0], 2.5, rtol=1e-6)

  # The original's: each utterance weighs the same, and its std is averaged, not pooled.
  out = tmp_path / 'original.npz'
  result = _stats_cli(str(features), '--definition=per_utterance', f'--out={out}')  # renamed
  assert result.returncode == 0, result.stderr
  assert 'note: --out is now --output; the old spelling works until 0.3' in result.stderr
  mean, std = trainers.load_stats(str(out))
  np.testing.assert_allclose(mean, 2.0, rtol=1e-6)
  np.testing.assert_allclose(std, 1.0, rtol=1e-6)
  # The mean/std trainer normalises with it: (x - mean) / std / 3.
  normalise = trainers.get('mean_std', str(out)).normalize
  mel = np.full((1, 80, 4), 5.0, np.float32)
  np.testing.assert_allclose(np.asarray(normalise(mel)), (5.0 - 2.0) / 1.0 / 3, rtol=1e-6)


def test_preprocessing_writes_the_frames_definition(small_features):
  """The stats.npz preprocessing wrote is the frames definition of its training features."""
  files = sorted((small_features / 'train').glob('*.npy'))
  expected = corpus.feature_stats([str(f) for f in files], 'frames')
  with np.load(small_features / 'stats.npz') as stats:
    np.testing.assert_allclose(stats['mean'], expected['mean'], rtol=1e-5)
    np.testing.assert_allclose(stats['std'], expected['std'], rtol=1e-5)
    assert int(stats['frames']) == expected['frames']
  pooled = np.concatenate([np.load(f) for f in files], axis=1)
  np.testing.assert_allclose(expected['mean'], pooled.mean(axis=1), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(expected['std'], pooled.std(axis=1), rtol=1e-4, atol=1e-5)
