"""The vocoders behind one call: Griffin-Lim on a known signal, long mels in windows."""

import numpy as np
import pytest

from skipvqvc_jax import vocoders
from skipvqvc_jax.data import audio
from skipvqvc_jax.vocoders import GriffinLim


def test_griffin_lim_reconstructs_a_known_signal():
  sr = 22050
  t = np.arange(sr * 2) / sr
  y = (
    0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t * (1 + 0.1 * t))
  ).astype(np.float32)
  mel = audio.log_mel(y)
  wave = GriffinLim(n_iter=32)(mel)
  assert len(wave) == mel.shape[1] * 256
  rebuilt = audio.mel_basis() @ audio.magnitude(wave)
  target = 10.0**mel
  convergence = np.linalg.norm(rebuilt - target) / np.linalg.norm(target)
  assert convergence < 0.15, convergence  # measured 0.05-0.1 for this signal


def test_long_mels_are_vocoded_in_windows_that_join_exactly():
  from skipvqvc_jax.vocoders import windows

  mel = np.random.default_rng(0).normal(-4, 1, (80, 2500)).astype(np.float32)
  # A vocoder whose output at a frame depends on that frame alone: windows and their crossfades must
  # give exactly what one pass over the whole mel gives.
  local = lambda mels: np.repeat(mels.mean(axis=1), 256, axis=-1)
  calls = []
  windowed = windows.vocode_in_windows(lambda m: calls.append(m.shape) or local(m), mel, 256)
  np.testing.assert_allclose(windowed, local(mel[None])[0], rtol=1e-6, atol=1e-6)
  assert len(windowed) == 2500 * 256
  assert set(calls) == {(1, 80, windows.WINDOW_FRAMES)}  # one shape: one compile


def test_griffin_lim_in_windows_is_as_good_as_in_one_pass():
  sr, seconds = 22050, 40
  t = np.arange(sr * seconds) / sr
  y = (0.3 * np.sin(2 * np.pi * (200 + 5 * t) * t)).astype(np.float32)
  mel = audio.log_mel(y)
  assert mel.shape[1] > 3 * 1024  # several windows

  def convergence(wave):
    rebuilt, target = audio.mel_basis() @ audio.magnitude(wave), 10.0**mel
    return np.linalg.norm(rebuilt - target) / np.linalg.norm(target)

  vocoder = GriffinLim(n_iter=32)
  windowed = vocoder(mel)
  whole = vocoder(mel[None])[0]  # a batch is vocoded in one pass
  assert len(windowed) == len(whole) == mel.shape[1] * 256
  assert convergence(windowed) < convergence(whole) + 0.02, (
    convergence(windowed),
    convergence(whole),
  )


def test_a_vocoder_family_is_a_row_and_an_unknown_one_is_one_line():
  from skipvqvc_jax.configs import vocoder as vocoder_presets
  from skipvqvc_jax.core.errors import ConfigError

  config = vocoder_presets.get_config('tiny')
  spec = vocoders.generator_spec(config)
  assert spec == dict(name='melgan', n_mels=80, ngf=4, residual_layers=1)
  assert vocoders.FAMILIES['melgan'].published == ('melgan',)
  config.generator.family = 'wavenet'
  with pytest.raises(ConfigError, match="generator.family='wavenet': use melgan"):
    vocoders.generator_spec(config)
