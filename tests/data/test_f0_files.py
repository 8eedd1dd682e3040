"""preprocess.py --f0: F0 beside the features, on chirps whose F0 is known; made once, kept up to date,
one method per folder."""

import os
import sys

import numpy as np
import pytest
import soundfile as sf

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import f0, f0_files, preprocessing
from tests import audio_fixtures
from tests.conftest import run_in_repo

SR = 22050
CHIRPS = {  # speaker/utterance: (start F0 in Hz, seconds); voiced() rises linearly by half
  'ann/ann_001.wav': (110.0, 1.6),
  'ann/ann_002.wav': (125.0, 1.4),
  'ben/ben_001.wav': (180.0, 1.5),
  'cat/cat_001.wav': (220.0, 1.3),
}


@pytest.fixture
def corpus(tmp_path):
  for i, (rel, (start, seconds)) in enumerate(CHIRPS.items()):
    path = tmp_path / 'corpus' / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio_fixtures.voiced(seconds, SR, start, seed=i), SR)
  return tmp_path / 'corpus'


def _run(corpus, out, **kwargs):
  logs = []
  manifest = preprocessing.preprocess(
    str(corpus),
    str(out),
    test_speakers=['cat'],
    workers=1,
    progress=False,
    log=logs.append,
    **kwargs,
  )
  return manifest, logs


def test_f0_is_made_beside_each_feature_and_kept_up_to_date(corpus, tmp_path):
  out = tmp_path / 'features'
  manifest, _ = _run(corpus, out, f0_params=f0.F0Params('dio'))
  assert manifest['f0_params'] == f0.F0Params('dio').to_dict()
  for item in manifest['items']:
    path = f0_files.f0_path(str(out), item['file'])
    assert path == f0_files.f0_of_feature(str(out / item['file']))
    contour = np.load(path)
    assert contour.shape == (1, item['frames']) and contour.dtype == np.float32
    # The chirp's F0 at each frame's centre: the trimmed audio starts trim[0] samples in, after
    # 0.2 s of silence; F0 rises from start by half over the chirp.
    start, seconds = CHIRPS[item['source']]
    t = (item['trim'][0] + (np.arange(item['frames']) + 0.5) * 256) / SR - 0.2
    expected = start * (1 + 0.5 * t / seconds)
    voiced = contour[0] > 0
    assert voiced.mean() > 0.8, item['source']
    error = np.abs(contour[0][voiced] / expected[voiced] - 1)
    assert np.median(error) < 0.01, (item['source'], np.median(error))

  # Made once: a rerun (without --f0: the folder has F0) remakes only a missing file.
  missing = f0_files.f0_path(str(out), manifest['items'][0]['file'])
  os.remove(missing)
  again, logs = _run(corpus, out)
  assert again['f0_params'] == manifest['f0_params'] and os.path.isfile(missing)
  assert any('1 files to estimate' in line for line in logs), logs

  # An utterance gone: its feature and its F0 go.
  gone = manifest['items'][1]
  os.remove(corpus / gone['source'])
  _run(corpus, out)
  assert not os.path.exists(f0_files.f0_path(str(out), gone['file']))

  # Another method is refused before anything is written.
  with pytest.raises(errors.CorpusError, match='--f0=dio'):
    _run(corpus, out, f0_params=f0.F0Params('pyin'))


def _preprocess_cli(corpus, out, method: str, env=None):
  return run_in_repo(
    [
      sys.executable,
      'preprocess.py',
      str(corpus),
      str(out),
      f'--f0={method}',
      '--test_speakers=cat',
      '--workers=1',
      '--noprogress',
    ],
    timeout=300,
    env=env,
  )


def test_the_command_takes_f0(corpus, tmp_path):
  out = tmp_path / 'features'
  result = _preprocess_cli(corpus, out, 'dio')
  assert result.returncode == 0, result.stderr[-2000:]
  made = sorted(p.name for p in (out / 'f0' / 'train').iterdir())
  assert made == sorted(p.name for p in (out / 'train').iterdir())


def test_crepe_files_beside_the_audio_are_read_for_the_trimmed_span(corpus, tmp_path):
  """--f0=crepe: each audio file's <name>.f0.csv (CREPE's output, 10 ms steps over the whole file)
  gives its F0, cut to the trimmed span and stretched to the feature's frames."""
  for rel, (start, seconds) in CHIRPS.items():
    t = np.arange(0, seconds + 0.4, 0.01)
    inside = (t >= 0.2) & (t < 0.2 + seconds)
    freq = np.where(inside, start * (1 + 0.5 * (t - 0.2) / seconds), 0.0)
    rows = ''.join(f'{a:.2f},{f:.3f},{0.9 if f else 0.05}\n' for a, f in zip(t, freq))
    (corpus / rel).with_suffix('.f0.csv').write_text('time,frequency,confidence\n' + rows)
  out = tmp_path / 'features'
  manifest, _ = _run(corpus, out, f0_params=f0.F0Params('crepe'))
  for item in manifest['items']:
    contour = np.load(f0_files.f0_path(str(out), item['file']))[0]
    start, seconds = CHIRPS[item['source']]
    t = (item['trim'][0] + (np.arange(item['frames']) + 0.5) * 256) / SR - 0.2
    expected = start * (1 + 0.5 * t / seconds)
    voiced = contour > 0
    assert voiced.mean() > 0.8
    assert np.median(np.abs(contour[voiced] / expected[voiced] - 1)) < 0.01, item['source']
  # An audio file without its CSV: its F0 is missing, said in the log and the manifest.
  os.remove((corpus / 'ben/ben_001.wav').with_suffix('.f0.csv'))
  os.remove(f0_files.f0_path(str(out), 'train/ben_001.npy'))
  manifest, logs = _run(corpus, out)
  assert any('no CREPE F0 file' in line for line in logs), logs
  assert any('no CREPE F0 file' in s['reason'] for s in manifest['skipped'])


def test_an_f0_method_that_cannot_run_is_one_line_before_any_work(corpus, tmp_path):
  """pyworld installed but broken (it imports pkg_resources, which new setuptools lacks): one line
  with the import's own error, exit 1, no feature made (it was one line per file advising to install
  what is installed, exit 0, and every file counted as skipped)."""
  broken = tmp_path / 'site' / 'pyworld'
  broken.mkdir(parents=True)
  (broken / '__init__.py').write_text(
    'raise ModuleNotFoundError("No module named \'pkg_resources\'")\n'
  )
  env = dict(os.environ, PYTHONPATH=str(broken.parent))
  out = tmp_path / 'features'
  result = _preprocess_cli(corpus, out, 'harvest', env)
  assert result.returncode == 1, result.stderr[-2000:]
  errors_ = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert errors_ == [
    'error: --f0=harvest needs pyworld, which does not import here (No module named '
    '\'pkg_resources\'): pip install -e ".[listen]" if it is missing (it needs setuptools<81), or '
    'use --f0=pyin'
  ], result.stderr[-2000:]
  assert not list(out.rglob('*.npy'))
