"""WORLD analysis and resynthesis of a waveform (the original's notebooks inspect a mel's source audio
this way): F0 (Harvest), spectral envelope (CheapTrick) and aperiodicity (D4C) every 5 ms, the waveform
made again from them, and one picture of the three. pyworld is the `[listen]` extra."""

from __future__ import annotations

import dataclasses

import numpy as np

from skipvqvc_jax.core.errors import AudioError
from skipvqvc_jax.store import summaries

FRAME_MS = 5.0


@dataclasses.dataclass(frozen=True)
class World:
  """A waveform's WORLD parameters, one row per `FRAME_MS` frame."""

  f0: np.ndarray  # (frames,) Hz, 0 where unvoiced
  envelope: np.ndarray  # (frames, n_fft / 2 + 1) power spectral envelope
  aperiodicity: np.ndarray  # (frames, n_fft / 2 + 1), 0 (periodic) to 1
  sample_rate: int


def _pyworld():
  try:
    import pyworld  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pyworld imports pkg_resources (setuptools < 81)
    raise AudioError(
      f'WORLD analysis needs pyworld ({e}): pip install "skipvqvc_jax[listen]"'
    ) from None
  return pyworld


def analyse(wave: np.ndarray, sample_rate: int) -> World:
  """`wave`'s F0, spectral envelope and aperiodicity (Harvest, CheapTrick, D4C)."""
  pyworld = _pyworld()
  x = np.ascontiguousarray(wave, np.float64)
  if x.ndim != 1 or len(x) < sample_rate // 100:
    raise AudioError(f'WORLD analysis takes mono audio of at least 10 ms; got shape {x.shape}')
  f0, times = pyworld.harvest(x, sample_rate, frame_period=FRAME_MS)
  envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
  aperiodicity = pyworld.d4c(x, f0, times, sample_rate)
  return World(f0, envelope, aperiodicity, sample_rate)


def resynthesise(world: World) -> np.ndarray:
  """The waveform WORLD makes from its parameters (float32, at `world.sample_rate`)."""
  pyworld = _pyworld()
  wave = pyworld.synthesize(
    world.f0, world.envelope, world.aperiodicity, world.sample_rate, frame_period=FRAME_MS
  )
  return wave.astype(np.float32)


def picture(world: World, title: str = '') -> np.ndarray:
  """An RGB uint8 picture of the envelope (dB), the aperiodicity and the F0 over time."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  seconds = np.arange(len(world.f0)) * FRAME_MS / 1000
  top = world.sample_rate / 2
  extent = (0, seconds[-1] if len(seconds) else 0, 0, top)
  fig, axes = plt.subplots(3, 1, figsize=(8, 7), dpi=80, sharex=True)
  envelope_db = 10 * np.log10(np.maximum(world.envelope, 1e-16)).T
  axes[0].imshow(envelope_db, aspect='auto', origin='lower', extent=extent, cmap='magma')
  axes[0].set(ylabel='Hz', title=f'{title} spectral envelope (dB)'.strip())
  axes[1].imshow(world.aperiodicity.T, aspect='auto', origin='lower', extent=extent, cmap='viridis')
  axes[1].set(ylabel='Hz', title='aperiodicity')
  axes[2].plot(seconds, np.where(world.f0 > 0, world.f0, np.nan))
  axes[2].set(xlabel='seconds', ylabel='Hz', title='F0 (unvoiced left out)')
  return summaries.figure_rgb(fig)
