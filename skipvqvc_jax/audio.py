"""Waveform <-> MelGAN-compatible log-mel features: the one feature code path of the project.

(Vocoder training computes the same features of its audio segments on the device with
`vocoders.griffin_lim.log_mel`; a test holds the two to the same frames and values.)

The features are the original's `Audio2Mel`: reflect-pad (n_fft - hop) / 2 on both sides, STFT with a
periodic Hann window and `center=False`, magnitude, Slaney mel filterbank, log10(max(mel, 1e-5)). Audio is
loaded at 22050 Hz (soxr high-quality resampling, channels averaged) and trimmed with `top_db=20`.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureParams:
  """Everything that determines a feature file; stored in the manifest and checked by training."""
  sample_rate: int = 22050
  n_fft: int = 1024
  hop_length: int = 256
  win_length: int = 1024
  n_mels: int = 80
  fmin: float = 0.0
  fmax: float | None = None  # None: sample_rate / 2
  log_floor: float = 1e-5
  trim_top_db: float | None = 20.0  # None: no trimming

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> 'FeatureParams':
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

  def mismatches(self, other: 'FeatureParams') -> list[str]:
    """'name: ours != theirs' for every differing field."""
    return [f'{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}'
            for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


class AudioError(ValueError):
  """The file cannot be used as speech audio; the message says why in one line."""


def load(path: str, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """Reads any audio file librosa can decode as float32 mono at params.sample_rate."""
  import librosa  # pylint: disable=import-outside-toplevel  (slow import; workers pay it once)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # librosa warns when it falls back to audioread
    try:
      y, _ = librosa.load(path, sr=params.sample_rate, mono=True, res_type='soxr_hq')
    except Exception as e:  # soundfile, audioread and decoder errors have no common base
      message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise AudioError(f'cannot decode audio ({message})') from None
  if y.size == 0:
    raise AudioError('no samples (empty audio)')
  if not np.isfinite(y).all():
    raise AudioError('samples are not finite')
  return y.astype(np.float32)


def trim(y: np.ndarray, params: FeatureParams = FeatureParams()) -> tuple[np.ndarray, tuple[int, int]]:
  """Trims leading and trailing silence (librosa.effects.trim); returns the audio and [start, end)."""
  if params.trim_top_db is None:
    return y, (0, len(y))
  if np.max(np.abs(y)) < 1e-4:  # below -80 dBFS: trim would keep noise, so call it silence
    raise AudioError('silent (peak below -80 dBFS)')
  import librosa  # pylint: disable=import-outside-toplevel
  trimmed, index = librosa.effects.trim(y, top_db=params.trim_top_db)
  return trimmed, (int(index[0]), int(index[1]))


@functools.lru_cache(maxsize=8)
def mel_basis(params: FeatureParams = FeatureParams()) -> np.ndarray:
  """The (n_mels, n_fft // 2 + 1) Slaney mel filterbank, float32."""
  import librosa  # pylint: disable=import-outside-toplevel
  return librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels,
                             fmin=params.fmin, fmax=params.fmax).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
  """Periodic Hann window (torch.hann_window's default; denominator N, not N - 1)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)


def magnitude(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """|STFT| of the reflect-padded waveform, (n_fft // 2 + 1, frames)."""
  pad = (params.n_fft - params.hop_length) // 2
  if len(y) <= pad:
    raise AudioError(f'too short to analyse ({len(y)} samples)')
  padded = np.pad(np.asarray(y, np.float32), (pad, pad), mode='reflect')
  frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[::params.hop_length]
  window = np.zeros(params.n_fft, np.float32)  # a shorter window sits centred in the FFT frame
  offset = (params.n_fft - params.win_length) // 2
  window[offset:offset + params.win_length] = hann_window(params.win_length)
  return np.abs(np.fft.rfft(frames * window, axis=-1)).T.astype(np.float32)


def log_mel(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """float32 (n_mels, frames) log10 mel spectrogram of a waveform at params.sample_rate."""
  mel = mel_basis(params) @ magnitude(y, params)
  return np.log10(np.maximum(mel, params.log_floor)).astype(np.float32)


def file_to_log_mel(path: str, params: FeatureParams = FeatureParams()) -> tuple[np.ndarray, float]:
  """Loads, trims and featurises one file; returns (log-mel, seconds of trimmed audio)."""
  y, _ = trim(load(path, params), params)
  return log_mel(y, params), len(y) / params.sample_rate
