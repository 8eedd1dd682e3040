"""The trainers' table: normalisations that invert and follow the original, the rhythm stretch."""

import numpy as np
import pytest


def test_normalisations_invert_and_follow_the_original(small_features):
  from skipvqvc_jax.training import trainers

  mel = np.random.default_rng(0).normal(-2, 2, (2, 80, 16)).astype(np.float32)
  simple = trainers.get('simple_normalize')
  np.testing.assert_allclose(simple.normalize(mel), (mel * 25 + 50) / 50, rtol=1e-6)
  np.testing.assert_allclose(simple.denormalize(simple.normalize(mel)), mel, atol=1e-5)
  mean_std = trainers.get('mean_std', str(small_features / 'stats.npz'))
  stats = np.load(small_features / 'stats.npz')
  np.testing.assert_allclose(
    mean_std.normalize(mel), (mel - stats['mean'][:, None]) / stats['std'][:, None] / 3, rtol=1e-5
  )
  np.testing.assert_allclose(mean_std.denormalize(mean_std.normalize(mel)), mel, atol=1e-4)
  # train_multi.py: the corpus mean/std without mean_std's / 3.
  multi = trainers.get('multi', str(small_features / 'stats.npz'))
  np.testing.assert_allclose(
    multi.normalize(mel), (mel - stats['mean'][:, None]) / stats['std'][:, None], rtol=1e-5
  )
  # A multi-scale model's coarser outputs are the lowest bands: they take those bands' statistics.
  low = multi.normalize(mel[0])[:20]
  np.testing.assert_allclose(multi.denormalize_bands(low, 80), mel[0, :20], atol=1e-4)
  assert trainers.get('simple_normalize_multi').stretch == 'input'
  assert trainers.get('simple_normalize_multi_rhythm').stretch == 'rhythm'
  with pytest.raises(ValueError, match='valid trainers: normal, mean_std'):
    trainers.get('fancy')


def test_rhythm_stretch_has_a_bounded_set_of_lengths():
  from skipvqvc_jax.training import trainers

  mel = np.arange(128, dtype=np.float32)[None, None, :].repeat(2, 0)
  lengths = set()
  rng = np.random.default_rng(0)
  for _ in range(200):
    target, stretched = trainers.rhythm_stretch(mel, rng)
    assert target.shape == stretched.shape and target.shape[-1] % 32 == 0
    assert np.all(np.diff(stretched[0, 0]) >= 0)  # segments stay in their original order
    lengths.add(target.shape[-1])
  assert lengths <= set(range(64, 257, 32)) and len(lengths) >= 4


def test_each_trainer_row_trains_the_models_it_declares():
  from skipvqvc_jax import models
  from skipvqvc_jax.core.errors import ConfigError
  from skipvqvc_jax.training import trainers

  trains = {}
  for trainer in trainers.TRAINERS.values():
    assert trainer.normalisation in trainers.NORMALISATIONS
    assert trainer.stretch in ('none', 'rhythm', 'input')
    trains[trainer.name] = []
    for name in models.names():
      try:
        trainer.check_model(models.get_class(name))
        trains[trainer.name].append(name)
      except ConfigError:
        pass
  single = ['vqvc+', 'vqvc+_rhythm', 'vqvc+_resample', 'vqvc+_speaker_quantize', 'vqvc+_cvae']
  any_to_one = ['vqvc+_multi_codebook_lj', 'vqvc+_lj3']
  multi = [n for n in models.names() if n.startswith('vqvc+_multi') and n not in any_to_one]
  assert trains['normal'] == trains['mean_std'] == trains['simple_normalize'] == single
  assert trains['rhythm'] == ['vqvc+_rhythm']
  assert trains['multi'] == trains['simple_normalize_multi'] == multi
  assert trains['simple_normalize_multi_rhythm'] == ['vqvc+_multi_rhythm']
  # The trainers made for one kind of model, and those models only them.
  assert trains['pitch_multi'] == ['vqvc+_pitch']
  assert trains['ljvae'] == any_to_one
