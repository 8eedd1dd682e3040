"""vqvc+_pitch trained in our loop (its trainer, train_pitch_multi.py, is a row of the trainers'
table): F0 comes with each crop, from the files preprocessing made beside the features; features
without F0, and the F0 trainer with another model, are refused in one line. Conversion estimates the
source's F0 (or reads it beside a feature) and shifts it by --f0_shift semitones."""

import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

import skipvqvc_jax
from skipvqvc_jax.core.errors import ConfigError, ConversionError, CorpusError
from skipvqvc_jax.data import f0, f0_files, feature_files
from skipvqvc_jax.training import input_pipeline, loop
from tests.conftest import preprocess_small, run_in_repo, tiny_config

PRESET = 'vqvc_plus_pitch.py:tiny'


@pytest.fixture(scope='module')
def f0_features_dir(small_corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp('pitch_features')
  return preprocess_small(small_corpus, out, f0_params=f0.F0Params('dio'))


def test_each_crop_comes_with_its_own_f0(f0_features_dir):
  dataset = input_pipeline.make_dataset(
    str(f0_features_dir / 'train'), batch_size=4, crop_frames=64, seed=3, f0=True
  )
  files = feature_files.list_features(str(f0_features_dir / 'train'))
  for index in (0, 5):
    batch = dataset[index]
    assert batch['f0'].shape == (4, 64) and batch['f0'].dtype == np.float32
    for mel, contour in zip(batch['mel'], batch['f0']):
      # Find the crop's file and window, then the F0 file must hold the same window.
      for path in files:
        full = np.load(path)
        starts = [s for s in range(full.shape[1] - 63) if np.array_equal(full[:, s : s + 64], mel)]
        if starts:
          whole = np.load(f0_files.f0_of_feature(path))[0]
          np.testing.assert_array_equal(contour, whole[starts[0] : starts[0] + 64])
          break
      else:
        pytest.fail('a crop of no file')
    assert (batch['f0'] > 0).any()


@pytest.fixture(scope='module')
def pitch_run(f0_features_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('pitch_run')
  config = tiny_config(f0_features_dir, PRESET, num_train_steps=4, **{'data.f0_method': 'dio'})
  return workdir, loop.train_and_evaluate(config, str(workdir))


def test_the_pitch_model_trains_and_samples_with_f0(pitch_run):
  _, summary = pitch_run
  assert summary['step'] == 4 and summary['status'] == 'finished'
  assert all(np.isfinite(v) for v in summary['train_losses'].values())
  assert np.isfinite(summary['evals'][4]['loss'])


def test_conversion_takes_the_source_f0_and_shifts_it(pitch_run, small_corpus, f0_features_dir):
  workdir, _ = pitch_run
  converter = skipvqvc_jax.load(str(workdir))
  assert converter.f0_params.method == 'dio'  # the run's own estimator
  source, target = small_corpus / 'esf2' / 'esf2_001.ogg', small_corpus / 'awb' / 'awb_002.ogg'
  plain = converter.convert(str(source), str(target))
  assert plain.ndim == 1 and np.isfinite(plain).all() and len(plain) > 0.5 * converter.sample_rate
  higher = converter.convert(str(source), str(target), f0_shift=12.0)
  assert higher.shape == plain.shape and np.abs(higher - plain).max() > 1e-4
  # A feature file's F0 is read beside it; a feature without F0 is refused in one line.
  feature = f0_features_dir / 'test' / 'esf2_001.npy'
  from_feature = converter.convert(str(feature), str(target))
  assert from_feature.shape == plain.shape
  bare = f0_features_dir / 'bare' / 'esf2_001.npy'
  bare.parent.mkdir()
  shutil.copy(feature, bare)
  with pytest.raises(ConversionError, match='needs the F0 of its source'):
    converter.convert(str(bare), str(target))
  # The command line, with --f0_shift.
  out = f0_features_dir / 'shifted.wav'
  result = run_in_repo(
    [
      sys.executable,
      'main.py',
      '--mode=convert',
      f'--workdir={workdir}',
      f'--source={source}',
      f'--target={target}',
      f'--output={out}',
      '--f0_shift=-5',
    ],
    timeout=600,
  )
  assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]


def test_f0_shift_is_refused_for_a_model_without_f0(workdir, small_corpus):
  converter = skipvqvc_jax.load(str(workdir))
  source = small_corpus / 'esf2' / 'esf2_001.ogg'
  with pytest.raises(ConversionError, match='--f0_shift: vqvc\\+ is not conditioned on F0'):
    converter.convert(str(source), str(source), f0_shift=2.0)


def test_features_without_f0_and_a_mismatched_trainer_are_refused(small_features, tmp_path):
  with pytest.raises(CorpusError, match='has no F0 .*--f0=harvest'):
    loop.train_and_evaluate(tiny_config(small_features, PRESET), str(tmp_path / 'no_f0'))
  with pytest.raises(ConfigError, match='the F0 trainer and the F0 model'):
    loop.train_and_evaluate(
      tiny_config(small_features, PRESET, **{'model.name': 'vqvc+_multi'}), str(tmp_path / 'a')
    )
  with pytest.raises(ConfigError, match='the F0 trainer and the F0 model'):
    loop.train_and_evaluate(
      tiny_config(small_features, PRESET, trainer='simple_normalize_multi'), str(tmp_path / 'b')
    )
  shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_web_page_offers_the_melody_shift(pitch_run, small_corpus):
  gr = pytest.importorskip('gradio')
  from skipvqvc_jax.apps import demo
  from skipvqvc_jax.inference import page_conversions

  source, target = small_corpus / 'esm1' / 'esm1_001.ogg', small_corpus / 'slt' / 'slt_003.ogg'
  page = page_conversions.PageConversions(str(pitch_run[0]), ['griffin_lim'], 60.0)
  plain, _ = page.run(str(source), str(target), None, 'griffin_lim')
  shifted, image = page.run(str(source), str(target), None, 'griffin_lim', f0_shift=7)
  a, b = sf.read(plain)[0], sf.read(shifted)[0]
  assert a.shape == b.shape and np.abs(a - b).max() > 1e-4 and image.endswith('.png')
  sliders = [c.label for c in demo.build(page).blocks.values() if isinstance(c, gr.Slider)]
  assert sliders == ['Melody shift (semitones)']


def test_eval_converts_with_the_f0_beside_the_test_features(pitch_run):
  from skipvqvc_jax.evaluation import evaluate

  metrics = evaluate.run(str(pitch_run[0]), num_pairs=2, report_pairs=0)
  assert np.isfinite(metrics['recon_l1_logmel']) and metrics['conversion']['pairs'] == 2
