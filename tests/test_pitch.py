"""vqvc+_pitch trained in our loop (its trainer, train_pitch_multi.py, is a row of the trainers'
table): F0 comes with each crop, from the files preprocessing made beside the features; features
without F0, and the F0 trainer with another model, are refused in one line."""

import shutil

import numpy as np
import pytest

from skipvqvc_jax import f0, f0_features, input_pipeline, preprocessing, train
from skipvqvc_jax.errors import ConfigError, CorpusError
from tests.conftest import tiny_config

PRESET = 'vqvc_plus_pitch.py:tiny'


@pytest.fixture(scope='module')
def f0_features_dir(small_corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp('pitch_features')
  preprocessing.preprocess(
    str(small_corpus),
    str(out),
    test_speakers=['esf2', 'esm1'],
    workers=1,
    progress=False,
    log=lambda _: None,
    f0_params=f0.F0Params('dio'),
  )
  return out


def test_each_crop_comes_with_its_own_f0(f0_features_dir):
  dataset = input_pipeline.make_dataset(
    str(f0_features_dir / 'train'), batch_size=4, crop_frames=64, seed=3, f0=True
  )
  files = input_pipeline.list_features(str(f0_features_dir / 'train'))
  for index in (0, 5):
    batch = dataset[index]
    assert batch['f0'].shape == (4, 64) and batch['f0'].dtype == np.float32
    for mel, contour in zip(batch['mel'], batch['f0']):
      # Find the crop's file and window, then the F0 file must hold the same window.
      for path in files:
        full = np.load(path)
        starts = [s for s in range(full.shape[1] - 63) if np.array_equal(full[:, s : s + 64], mel)]
        if starts:
          whole = np.load(f0_features.f0_of_feature(path))[0]
          np.testing.assert_array_equal(contour, whole[starts[0] : starts[0] + 64])
          break
      else:
        pytest.fail('a crop of no file')
    assert (batch['f0'] > 0).any()


def test_the_pitch_model_trains_and_samples_with_f0(f0_features_dir, tmp_path):
  summary = train.train_and_evaluate(
    tiny_config(f0_features_dir, PRESET, num_train_steps=4), str(tmp_path)
  )
  assert summary['step'] == 4 and summary['status'] == 'finished'
  assert all(np.isfinite(v) for v in summary['train_losses'].values())
  assert np.isfinite(summary['evals'][4]['loss'])


def test_features_without_f0_and_a_mismatched_trainer_are_refused(small_features, tmp_path):
  with pytest.raises(CorpusError, match='has no F0 .*--f0=harvest'):
    train.train_and_evaluate(tiny_config(small_features, PRESET), str(tmp_path / 'no_f0'))
  with pytest.raises(ConfigError, match='the F0 trainer and the F0 model'):
    train.train_and_evaluate(
      tiny_config(small_features, PRESET, **{'model.name': 'vqvc+_multi'}), str(tmp_path / 'a')
    )
  with pytest.raises(ConfigError, match='the F0 trainer and the F0 model'):
    train.train_and_evaluate(
      tiny_config(small_features, PRESET, trainer='simple_normalize_multi'), str(tmp_path / 'b')
    )
  shutil.rmtree(tmp_path, ignore_errors=True)
