"""F0 per log-mel frame on audio whose F0 is known: a synthetic tone glide between two silences, and
CREPE's CSV files read as the original's loader reads them."""

import numpy as np
import pytest

from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import audio, f0

SR = 22050
PARAMS = audio.FeatureParams(trim_top_db=None)
# Median error in cents on the glide. WORLD's estimators land within a cent at each frame's centre,
# (i + 1/2) hops; at i hops (half a hop early) the glide has moved 3 cents.
MEDIAN_CENTS = {'harvest': 1.0, 'dio': 1.0, 'pyin': 5.0}


def _glide(low=120.0, high=240.0, seconds=2.0, silence=0.3):
  """A harmonic tone whose F0 rises exponentially from low to high Hz, with silence either side;
  and its F0 at any instant."""
  t = np.arange(int(seconds * SR)) / SR
  freq = low * (high / low) ** (t / seconds)
  phase = 2 * np.pi * np.cumsum(freq) / SR
  tone = sum(0.3 / k * np.sin(k * phase) for k in (1, 2, 3))
  pad = np.zeros(int(silence * SR))
  y = np.concatenate([pad, tone, pad]).astype(np.float32)

  def truth(seconds_at):
    inside = (seconds_at >= silence) & (seconds_at < silence + seconds)
    return np.where(inside, low * (high / low) ** ((seconds_at - silence) / seconds), 0.0)

  return y, truth


@pytest.mark.parametrize('method', list(f0.METHODS))
def test_a_tone_glide_is_tracked_frame_by_frame(method):
  y, truth = _glide()
  estimate = f0.f0_per_frame(y, PARAMS, f0.F0Params(method=method))
  assert estimate.shape == (audio.num_frames(len(y), PARAMS),) and estimate.dtype == np.float32
  centres = (np.arange(len(estimate)) + 0.5) * PARAMS.hop_length / SR  # each frame's instant
  expected = truth(centres)
  margin = 0.05  # s: frames whose window straddles an edge of the tone
  inside = (centres > 0.3 + margin) & (centres < 2.3 - margin)
  outside = (centres < 0.3 - margin) | (centres > 2.3 + margin)
  voiced = inside & (estimate > 0)
  assert voiced.sum() >= 0.95 * inside.sum()
  cents = 1200 * np.abs(np.log2(estimate[voiced] / expected[voiced]))
  assert np.median(cents) < MEDIAN_CENTS[method], (method, np.median(cents))
  assert np.percentile(cents, 95) < 10 * MEDIAN_CENTS[method]
  assert np.all(estimate[outside] == 0)  # silence is unvoiced


def test_crepe_csv_is_read_as_the_original_reads_it(tmp_path):
  path = tmp_path / 'p225_001.f0.csv'
  rows = [(0.00, 200.0, 0.9), (0.01, 210.0, 0.2), (0.02, 50.0, 0.9), (0.03, 220.0, 0.8)]
  path.write_text('time,frequency,confidence\n' + ''.join(f'{t},{f},{c}\n' for t, f, c in rows))
  # Low confidence and out-of-range frequencies are unvoiced; 4 values stretched to 8 frames by
  # nearest neighbour (source index floor(i * 4 / 8)).
  np.testing.assert_array_equal(f0.read_crepe_csv(str(path), 8), [200, 200, 0, 0, 0, 0, 220, 220])
  (tmp_path / 'bad.csv').write_text('time,pitch\n0,100\n')
  with pytest.raises(CorpusError, match='bad.csv: not a CREPE F0 file'):
    f0.read_crepe_csv(str(tmp_path / 'bad.csv'), 8)
