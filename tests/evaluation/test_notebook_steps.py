"""The original notebooks' remaining steps as API calls: a seeded random pair from a feature folder, a
picture of several mels, and WORLD analysis and resynthesis of audio with its picture."""

import shutil

import numpy as np
import pytest

import skipvqvc_jax
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import corpus


def test_a_random_pair_is_two_speakers_and_the_seed_decides_it(small_features, tmp_path):
  test_dir = str(small_features / 'test')
  pairs = [skipvqvc_jax.random_pair(test_dir, seed) for seed in range(12)]
  for source, target in pairs:
    assert source.endswith('.npy') and corpus.speaker_of(source) != corpus.speaker_of(target)
  assert pairs[3] == skipvqvc_jax.random_pair(test_dir, 3)
  assert len(set(pairs)) > 3  # the seed moves it
  alone = tmp_path / 'alone'
  alone.mkdir()
  for f in sorted((small_features / 'test').glob('esf2_*.npy')):
    shutil.copy(f, alone / f.name)
  with pytest.raises(CorpusError, match='one speaker only; a pair needs two speakers'):
    skipvqvc_jax.random_pair(str(alone))


def test_a_picture_of_several_mels_and_its_png(small_features, tmp_path):
  source, target = (np.load(f) for f in skipvqvc_jax.random_pair(str(small_features / 'test'), 0))
  one = skipvqvc_jax.plot_mels({'source': source})
  path = tmp_path / 'mels.png'
  three = skipvqvc_jax.plot_mels(
    {'source': source, 'target': target, 'scales': [source[:20, ::4], source]}, 'pair', str(path)
  )
  assert one.dtype == np.uint8 and one.shape[2] == 3 and three.shape[0] > 2 * one.shape[0]
  from matplotlib import pyplot as plt

  assert plt.imread(path).shape[:2] == three.shape[:2]
  assert len(np.unique(three.reshape(-1, 3), axis=0)) > 50  # drawn, not blank


def test_world_analysis_finds_the_f0_and_resynthesises_it():
  pytest.importorskip('pyworld')
  sr, f0 = 22050, 150.0
  t = np.arange(int(0.8 * sr)) / sr
  wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * 0.2
  world = skipvqvc_jax.world.analyse(wave, sr)
  voiced = world.f0[world.f0 > 0]
  assert len(voiced) > 0.8 * len(world.f0) and abs(np.median(voiced) - f0) < 0.03 * f0
  assert world.envelope.shape == world.aperiodicity.shape and world.envelope.shape[0] == len(
    world.f0
  )
  again = skipvqvc_jax.world.resynthesise(world)
  assert abs(len(again) - len(wave)) < 0.01 * sr
  replayed = skipvqvc_jax.world.analyse(again, sr).f0
  assert abs(np.median(replayed[replayed > 0]) - f0) < 0.03 * f0
  picture = skipvqvc_jax.world.picture(world, 'tone')
  assert picture.ndim == 3 and picture.shape[2] == 3
