"""F0 (fundamental frequency) per log-mel frame: what `vqvc+_pitch` is conditioned on.

Log-mel frame i (`audio.log_mel`) analyses the samples around (i + 1/2) hops, so F0 is estimated at
exactly those instants: the estimators run at half a hop and every second value is kept. Values are in
Hz, 0 where the frame is unvoiced. Three estimators (`METHODS`): WORLD's Harvest and DIO, both refined by
StoneMask (pyworld, the `listen` extra), and pYIN (librosa, always installed). Where a user has CREPE's
CSV files (the original's input: `frequency`, `confidence`), `read_crepe_csv` reads them as the original
does (confidence under 0.3 or a frequency outside 60-1100 Hz: unvoiced).
"""

from __future__ import annotations

import csv
import dataclasses

import numpy as np

from skipvqvc_jax import audio
from skipvqvc_jax.errors import AudioError, CorpusError

# The original's data loader keeps CREPE frequencies in this range with this confidence.
CREPE_RANGE_HZ = (60.0, 1100.0)
CREPE_MIN_CONFIDENCE = 0.3


@dataclasses.dataclass(frozen=True)
class F0Params:
  """Everything that determines an F0 file: stored in the manifest beside the feature parameters."""

  method: str = 'harvest'
  fmin: float = 60.0  # Hz: the search range of the estimators
  fmax: float = 800.0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> F0Params:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _world(estimator: str):
  def estimate(y, sample_rate, period_ms, params: F0Params):
    try:
      import pyworld  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise AudioError(
        f'F0 method {params.method} needs pyworld: pip install -e ".[listen]", or use --f0=pyin'
      ) from None
    x = np.ascontiguousarray(y, np.float64)
    f0, times = getattr(pyworld, estimator)(
      x, sample_rate, f0_floor=params.fmin, f0_ceil=params.fmax, frame_period=period_ms
    )
    return pyworld.stonemask(x, f0, times, sample_rate)

  return estimate


def _pyin(y, sample_rate, period_ms, params: F0Params):
  import librosa  # pylint: disable=import-outside-toplevel

  hop = round(period_ms * sample_rate / 1000)
  f0, voiced, _ = librosa.pyin(
    np.asarray(y, np.float32),
    fmin=params.fmin,
    fmax=params.fmax,
    sr=sample_rate,
    frame_length=max(2048, 4 * hop),
    hop_length=hop,
    center=True,
  )
  return np.where(voiced & np.isfinite(f0), f0, 0.0)


# method -> estimator(y, sample_rate, frame period in ms, F0Params): Hz at t = k * period, 0 unvoiced.
METHODS = {'harvest': _world('harvest'), 'dio': _world('dio'), 'pyin': _pyin}


def f0_per_frame(
  y: np.ndarray, params: audio.FeatureParams = audio.FeatureParams(), f0: F0Params = F0Params()
) -> np.ndarray:
  """float32 (frames,) F0 in Hz of `log_mel(y, params)`'s frames (0: unvoiced)."""
  if f0.method not in METHODS:
    raise AudioError(f'unknown F0 method {f0.method!r}; valid: {", ".join(METHODS)}')
  if params.hop_length % 2:
    raise AudioError(f'F0 needs an even hop_length (frames at half a hop); got {params.hop_length}')
  frames = audio.num_frames(len(y), params)
  half_hop_ms = 500.0 * params.hop_length / params.sample_rate
  values = np.asarray(METHODS[f0.method](y, params.sample_rate, half_hop_ms, f0), np.float64)
  centred = values[1::2][:frames]  # t = (i + 1/2) hops: frame i's centre
  out = np.zeros(frames, np.float32)
  out[: len(centred)] = np.where(np.isfinite(centred) & (centred > 0), centred, 0.0)
  return out


def read_crepe_csv(path: str, frames: int) -> np.ndarray:
  """float32 (frames,) F0 in Hz from CREPE's CSV (`time,frequency,confidence`), stretched to `frames`
  by nearest neighbour as the original's loader does; unvoiced (0) where it would set 1 Hz."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    frequency = np.array([float(r['frequency']) for r in rows])
    confidence = np.array([float(r['confidence']) for r in rows])
  except (OSError, KeyError, ValueError, TypeError) as e:
    raise CorpusError(
      f'{path}: not a CREPE F0 file with frequency and confidence columns ({type(e).__name__})'
    ) from None
  if not len(frequency):
    raise CorpusError(f'{path}: no F0 values')
  low, high = CREPE_RANGE_HZ
  keep = (confidence >= CREPE_MIN_CONFIDENCE) & (frequency >= low) & (frequency <= high)
  # torch's F.interpolate(mode='nearest', scale_factor=frames / n): source index floor(i * n / frames).
  index = np.floor(np.arange(frames) * (len(frequency) / frames)).astype(int)
  return np.where(keep, frequency, 0.0)[np.minimum(index, len(frequency) - 1)].astype(np.float32)
