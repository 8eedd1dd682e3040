"""Features that are not what they claim (NaN or inf values, a wrong shape): named in one line wherever
they are met, before a step or a score is spoilt; and preprocessing never writes one."""

import re
import shutil

import numpy as np
import pytest

from skipvqvc_jax.core import errors
from skipvqvc_jax.data import audio
from skipvqvc_jax.evaluation import evaluate
from skipvqvc_jax.training import loop
from tests.conftest import quiet_preprocess, tiny_config


@pytest.fixture
def features(small_features, tmp_path):
  """A private copy of the small feature folder, to damage."""
  copy = tmp_path / 'features'
  shutil.copytree(small_features, copy)
  return copy


def _poison(path, how: str):
  mel = np.load(path)
  if how == 'nan':
    mel[3, 5] = np.nan
  elif how == 'inf':
    mel[0, -1] = -np.inf
  else:  # a wrong shape: the bands transposed into frames
    mel = mel.T.copy()
  np.save(path, mel)


@pytest.mark.parametrize('side', ['train', 'test'])
@pytest.mark.parametrize('how', ['nan', 'inf', 'shape'])
def test_a_bad_feature_stops_training_before_a_step_naming_it(features, tmp_path, side, how):
  bad = sorted((features / side).glob('*.npy'))[1]
  _poison(bad, how)
  workdir = tmp_path / 'run'
  with pytest.raises(errors.CorpusError, match=str(bad)) as raised:
    loop.train_and_evaluate(tiny_config(features, num_train_steps=2), str(workdir))
  assert ('not finite' if how != 'shape' else 'shape') in str(raised.value)
  assert '\n' not in str(raised.value)
  assert not list(workdir.glob('checkpoints/[0-9]*'))  # before the first step: none saved


def test_eval_names_a_bad_test_feature(workdir, small_features, tmp_path):
  """A NaN test feature once gave `test loss nan` and exit 0; now a one-line error naming it."""
  run, features = tmp_path / 'run', tmp_path / 'features'
  shutil.copytree(workdir, run, ignore=shutil.ignore_patterns('eval', '.lock*'))
  shutil.copytree(small_features, features)
  bad = sorted((features / 'test').glob('*.npy'))[0]
  _poison(bad, 'nan')
  config = (run / 'config.json').read_text().replace(str(small_features), str(features))
  (run / 'config.json').write_text(config)
  with pytest.raises(errors.CorpusError, match=f'{bad}: holds values that are not finite'):
    evaluate.run(str(run), num_pairs=2, per_speaker=2)


def test_preprocessing_never_writes_a_non_finite_feature(small_corpus, tmp_path, monkeypatch):
  """A feature that comes out non-finite is skipped with its reason, like unusable audio."""
  real, calls = audio.log_mel, []

  def log_mel(y, params):  # every third file's features come out NaN
    calls.append(1)
    mel = real(y, params)
    return np.full_like(mel, np.nan) if len(calls) % 3 == 0 else mel

  monkeypatch.setattr(audio, 'log_mel', log_mel)
  out = tmp_path / 'features'
  manifest = quiet_preprocess(str(small_corpus), str(out))
  reasons = [s['reason'] for s in manifest['skipped']]
  assert reasons and all('not finite' in r for r in reasons)
  for path in out.rglob('*.npy'):
    assert np.isfinite(np.load(path)).all(), path


def test_a_resume_keeps_its_trainer_statistics_and_test_speakers(small_features, tmp_path):
  """Resuming a mean_std run: another trainer (or crop) is refused in one line and config.json is left
  as it was; statistics the feature folder got since (more audio preprocessed) do not replace the
  run's own, which its earlier checkpoints were trained with; and with its test features gone, it
  is refused rather than evaluated on training speakers called unseen."""
  features, workdir = tmp_path / 'features', tmp_path / 'run'
  shutil.copytree(small_features, features)
  # No test_dir given: the test/ beside train/ is found, as in most users' runs.
  config = lambda **kw: tiny_config(features, **{'trainer': 'mean_std', 'data.test_dir': '', **kw})
  loop.train_and_evaluate(config(num_train_steps=2), str(workdir))
  stats_before = (workdir / 'stats.npz').read_bytes()
  config_before = (workdir / 'config.json').read_text()
  for override, said in [
    (dict(trainer='normal'), "--config.trainer='mean_std' (this run: 'normal')"),
    ({'data.crop_frames': 64}, '--config.data.crop_frames=32 (this run: 64)'),
  ]:
    with pytest.raises(errors.TrainingError, match=re.escape(said)):
      loop.train_and_evaluate(config(num_train_steps=4, **override), str(workdir))
    assert (workdir / 'config.json').read_text() == config_before
  with np.load(features / 'stats.npz') as stats:
    moved = dict(mean=stats['mean'] + 0.7, std=stats['std'] * 2)
  np.savez(features / 'stats.npz', **moved)
  loop.train_and_evaluate(config(num_train_steps=4), str(workdir))
  assert (workdir / 'stats.npz').read_bytes() == stats_before
  config_before = (workdir / 'config.json').read_text()
  shutil.rmtree(features / 'test')
  with pytest.raises(errors.TrainingError, match='holds no features any more'):
    loop.train_and_evaluate(config(num_train_steps=6), str(workdir))
  assert (workdir / 'config.json').read_text() == config_before
