"""Vocoders behind one interface: `vocoder(log_mel) -> waveform`, with a `sample_rate` attribute."""
from __future__ import annotations

from skipvqvc_jax import audio
from skipvqvc_jax.vocoders.griffin_lim import GriffinLim


def get(name: str = 'griffin_lim', params: audio.FeatureParams = audio.FeatureParams()):
  """The vocoder named by a config or flag."""
  if name == 'griffin_lim':
    return GriffinLim(params)
  raise ValueError(f'unknown vocoder {name!r}; available: griffin_lim')
