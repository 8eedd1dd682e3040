"""Griffin-Lim in JAX: log-mel -> linear magnitude (non-negative pseudo-inverse) -> phase by iteration.

Analysis and synthesis use the same framing as the features (`audio.magnitude`): reflect padding of
(n_fft - hop) / 2, `center=False`, periodic Hann window, so a mel of T frames gives T * hop samples.
The phase iteration is the "fast" Griffin-Lim with momentum (Perraudin et al. 2013), as librosa's.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from skipvqvc_jax import audio


def _frame_indices(num_frames: int, params: audio.FeatureParams) -> np.ndarray:
  return np.arange(num_frames)[:, None] * params.hop_length + np.arange(params.n_fft)[None, :]


def _window(params: audio.FeatureParams) -> np.ndarray:
  window = np.zeros(params.n_fft, np.float32)
  offset = (params.n_fft - params.win_length) // 2
  window[offset:offset + params.win_length] = audio.hann_window(params.win_length)
  return window


def stft(y, params: audio.FeatureParams):
  """Complex STFT (batch, frames, n_fft // 2 + 1) of y (batch, samples), as audio.magnitude frames it."""
  pad = (params.n_fft - params.hop_length) // 2
  padded = jnp.pad(y, ((0, 0), (pad, pad)), mode='reflect')
  num_frames = 1 + (padded.shape[1] - params.n_fft) // params.hop_length
  frames = padded[:, _frame_indices(num_frames, params)]
  return jnp.fft.rfft(frames * _window(params), axis=-1)


def istft(spec, params: audio.FeatureParams):
  """Least-squares inverse of `stft`: windowed overlap-add, normalised by the summed squared window."""
  batch, num_frames, _ = spec.shape
  window = _window(params)
  frames = jnp.fft.irfft(spec, n=params.n_fft, axis=-1) * window
  index = _frame_indices(num_frames, params)
  length = (num_frames - 1) * params.hop_length + params.n_fft
  signal = jnp.zeros((batch, length), frames.dtype).at[:, index].add(frames)
  norm = np.zeros(length, np.float32)
  np.add.at(norm, index, np.broadcast_to(window**2, index.shape))
  signal = signal / np.maximum(norm, 1e-8)
  pad = (params.n_fft - params.hop_length) // 2
  return signal[:, pad:length - pad]


def log_mel(y, params: audio.FeatureParams, eps: float = 0.0):
  """`audio.log_mel` of waveforms (batch, samples) in JAX: (batch, n_mels, samples // hop).

  eps > 0 keeps the magnitude's gradient finite where a bin is exactly zero (generated audio)."""
  spec = stft(y, params)
  magnitude = jnp.sqrt(spec.real**2 + spec.imag**2 + eps) if eps else jnp.abs(spec)
  mel = jnp.einsum('mf,btf->bmt', audio.mel_basis(params), magnitude)
  return jnp.log10(jnp.maximum(mel, params.log_floor))


def mel_inverse(params: audio.FeatureParams) -> np.ndarray:
  """(n_fft // 2 + 1, n_mels) pseudo-inverse of the mel filterbank."""
  return np.linalg.pinv(audio.mel_basis(params)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=('params', 'n_iter', 'momentum'))
def _griffin_lim(log_mel, key, params: audio.FeatureParams, n_iter: int, momentum: float):
  magnitude = jnp.maximum(jnp.einsum('fm,bmt->btf', mel_inverse(params), 10.0 ** log_mel), 0.0)
  angles = jnp.exp(2j * jnp.pi * jax.random.uniform(key, magnitude.shape))

  def body(_, carry):
    angles, previous = carry
    rebuilt = stft(istft(magnitude * angles, params), params)
    angles = rebuilt - (momentum / (1 + momentum)) * previous
    return angles / (jnp.abs(angles) + 1e-16), rebuilt

  angles, _ = jax.lax.fori_loop(0, n_iter, body, (angles, jnp.zeros_like(angles)))
  return istft(magnitude * angles, params)


class GriffinLim:
  """A vocoder: raw log10 mels (n_mels, T) or (B, n_mels, T) -> float32 waveforms of T * hop samples."""

  name = 'griffin_lim'

  def __init__(self, params: audio.FeatureParams = audio.FeatureParams(), n_iter: int = 32,
               momentum: float = 0.99, seed: int = 0):
    self.params, self.n_iter, self.momentum, self.seed = params, n_iter, momentum, seed
    self.sample_rate = params.sample_rate

  def __call__(self, log_mel) -> np.ndarray:
    log_mel = np.asarray(log_mel, np.float32)
    single = log_mel.ndim == 2
    wave = _griffin_lim(log_mel[None] if single else log_mel, jax.random.key(self.seed),
                        self.params, self.n_iter, self.momentum)
    wave = np.asarray(wave, np.float32)
    return wave[0] if single else wave
