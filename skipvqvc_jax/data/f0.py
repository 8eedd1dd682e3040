"""F0 (fundamental frequency) per log-mel frame: what `vqvc+_pitch` is conditioned on.

Log-mel frame i (`audio.log_mel`) analyses the samples around (i + 1/2) hops, so F0 is estimated at
exactly those instants: the estimators run at half a hop and every second value is kept. Values are in
Hz, 0 where the frame is unvoiced. Three estimators (`METHODS`): WORLD's Harvest and DIO, both refined by
StoneMask (pyworld, the `listen` extra), and pYIN (librosa, always installed). Where a user has CREPE's
CSV files (the original's input: `time`, `frequency`, `confidence`; method `crepe`: the file CREPE writes
beside each audio file, `<name>.f0.csv`), `read_crepe_csv` reads them as the original does (confidence
under 0.3 or a frequency outside 60-1100 Hz: unvoiced).
"""

from __future__ import annotations

import csv
import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from skipvqvc_jax.core.errors import AudioError, CorpusError
from skipvqvc_jax.data import audio

# train_pitch_multi.py: MIDI numbers under this are silence (the loader's 1 Hz is MIDI -36).
SILENT_BELOW_MIDI = 20.0
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


def check_method(params: F0Params) -> None:
  """CorpusError, once and before any file is read, when `params.method` cannot run here: an unknown
  method, or pyworld (harvest, dio) that does not import, with the import's own error (it may be
  installed and broken: pyworld imports pkg_resources, which setuptools >= 81 lacks)."""
  if params.method not in METHODS and params.method != CREPE:
    raise CorpusError(
      f'--f0={params.method}: no such method; one of {", ".join([*METHODS, CREPE])}'
    )
  if params.method in ('harvest', 'dio'):
    try:
      import pyworld  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise CorpusError(
        f'--f0={params.method} needs pyworld, which does not import here ({e}): pip install -e '
        f'".[listen]" if it is missing (it needs setuptools<81), or use --f0=pyin'
      ) from None


def _world(estimator: str):
  def estimate(y, sample_rate, period_ms, params: F0Params):
    try:
      import pyworld  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise AudioError(f'F0 method {params.method} needs pyworld ({e}), or use --f0=pyin') from None
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
    raise AudioError(f'F0 method {f0.method!r} does not estimate; estimators: {", ".join(METHODS)}')
  if params.hop_length % 2:
    raise AudioError(f'F0 needs an even hop_length (frames at half a hop); got {params.hop_length}')
  frames = audio.num_frames(len(y), params)
  half_hop_ms = 500.0 * params.hop_length / params.sample_rate
  values = np.asarray(METHODS[f0.method](y, params.sample_rate, half_hop_ms, f0), np.float64)
  centred = values[1::2][:frames]  # t = (i + 1/2) hops: frame i's centre
  out = np.zeros(frames, np.float32)
  out[: len(centred)] = np.where(np.isfinite(centred) & (centred > 0), centred, 0.0)
  return out


CREPE = 'crepe'  # F0 read from CREPE's CSV beside each audio file, not estimated here


def crepe_csv_of(audio_path: str) -> str:
  """The CSV CREPE writes for an audio file: its name without the extension, + .f0.csv."""
  return os.path.splitext(audio_path)[0] + '.f0.csv'


def read_crepe_csv(path: str, frames: int, span: tuple[float, float] | None = None) -> np.ndarray:
  """float32 (frames,) F0 in Hz from CREPE's CSV (`time,frequency,confidence`), stretched to `frames`
  by nearest neighbour as the original's loader does; unvoiced (0) where it would set 1 Hz. `span`
  (start, end) in seconds keeps only the rows of that stretch of the audio (the trimmed part)."""
  if not os.path.isfile(path):
    raise CorpusError(f'{path}: no CREPE F0 file (run crepe on the audio, or choose another --f0)')
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    if span is not None:
      rows = [r for r in rows if span[0] <= float(r['time']) < span[1]]
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


def model_contour(f0_hz, shift_semitones: float = 0.0):
  """What `vqvc+_pitch`'s decoder takes, from F0 in Hz (B, T) (0: unvoiced), as
  train_pitch_multi.py makes it: MIDI numbers (unvoiced: its loader's 1 Hz), less the mean of the
  batch's voiced frames, + 20, / 50; unvoiced frames 0. Only the melody is left (the level is the
  speaker terms'); `shift_semitones` moves the voiced frames, in the model's units of 1/50."""
  midi = 12.0 * (jnp.log2(jnp.where(f0_hz > 0, f0_hz, 1.0)) - jnp.log2(440.0)) + 69.0
  voiced = midi > SILENT_BELOW_MIDI
  mean = jnp.sum(jnp.where(voiced, midi, 0.0)) / jnp.maximum(jnp.sum(voiced), 1)
  contour = (midi - mean + 20.0 + shift_semitones) / 50.0
  return jnp.where(midi < SILENT_BELOW_MIDI, 0.0, contour).astype(jnp.float32)
