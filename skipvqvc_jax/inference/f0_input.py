"""A conversion source's F0, and the contour an F0-conditioned model's decoder takes from it."""

from __future__ import annotations

import os

import numpy as np

from skipvqvc_jax.core.errors import AudioError, ConversionError, CorpusError
from skipvqvc_jax.data import audio, f0, f0_files


def source_f0(source, sr, params: audio.FeatureParams, f0_params: f0.F0Params, model: str):
  """A conversion source's F0 in Hz per frame: estimated from an audio file or samples at rate
  `sr` (trimmed as its features are), or the F0 file beside a .npy feature."""
  name = os.fspath(source) if isinstance(source, str | os.PathLike) else 'the audio array'
  try:
    if name.endswith('.npy'):
      path = f0_files.f0_of_feature(name)
      if not os.path.isfile(path):
        raise ConversionError(
          f'{name}: {model} needs the F0 of its source and there is none beside this feature '
          f'({path}); give the audio, or preprocess with --f0'
        )
      return np.load(path)[0]
    if isinstance(source, str | os.PathLike) and f0_params.method == f0.CREPE:
      wave, (start, end) = audio.trim(audio.load(name, params), params)
      span = (start / params.sample_rate, end / params.sample_rate)
      return f0.read_crepe_csv(f0.crepe_csv_of(name), audio.num_frames(len(wave), params), span)
    if isinstance(source, str | os.PathLike):
      wave = audio.load(name, params)
    else:
      wave = audio.from_array(source, sr or params.sample_rate, params)
    return f0.f0_per_frame(audio.trim(wave, params)[0], params, f0_params)
  except (AudioError, CorpusError) as e:
    raise ConversionError(f'{name}: {e}') from None


def decoder_contour(model, f0_hz, f0_shift: float, padded_frames: int):
  """An F0 model's decoder input (1, padded_frames) from its source's F0 in Hz, reflect-padded as the
  source's mel is; None for a model without F0. A missing F0, or a shift for a model without F0, is a
  ConversionError."""
  if not model.takes_f0:
    if f0_shift:
      raise ConversionError(f'--f0_shift: {model.name} is not conditioned on F0')
    return None
  if f0_hz is None:
    raise ConversionError(
      f'{model.name} needs the F0 of its source: convert from audio, or from a feature with F0 '
      f'beside it'
    )
  contour = np.asarray(f0.model_contour(np.asarray(f0_hz, np.float32)[None], f0_shift))
  return np.pad(contour, ((0, 0), (0, padded_frames - contour.shape[1])), mode='reflect')
