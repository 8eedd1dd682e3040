"""Waveform <-> MelGAN-compatible log-mel features: the one feature code path of the project.

The features are the original's `Audio2Mel`: reflect-pad (n_fft - hop) / 2 on both sides, STFT with a
periodic Hann window and `center=False`, magnitude, Slaney mel filterbank, log10(max(mel, 1e-5)). Audio is
loaded at 22050 Hz (soxr high-quality resampling, channels averaged) and trimmed with `top_db=20`.

Two implementations share the window and the framing: NumPy for one waveform (`log_mel`: preprocessing,
conversion) and JAX for batches on the device (`stft`, `istft`, `batch_log_mel`: vocoder training and
Griffin-Lim). A test holds the two to the same frames and values.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import warnings

import numpy as np

from skipvqvc_jax.core.errors import AudioError


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
  def from_dict(cls, d: dict) -> FeatureParams:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

  def mismatches(self, other: FeatureParams) -> list[str]:
    """'name: ours != theirs' for every differing field."""
    return [
      f'{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}'
      for f in dataclasses.fields(self)
      if getattr(self, f.name) != getattr(other, f.name)
    ]


# The longest file read: its length is taken from its header first (a 6-hour file was decoded whole,
# 4.3 GB, before it was refused). An hour of speech is far more than one utterance or a conversion.
MAX_SECONDS = 3600.0


def duration(path: str) -> float | None:
  """Seconds of audio in `path` from its header (libsndfile's: WAV, FLAC, OGG, MP3, ...), unread;
  None for a file it cannot read (a format only audioread decodes: asking it would start a decoder
  process per file, so such files go unchecked; the decode tells what is wrong with a bad one)."""
  import soundfile  # pylint: disable=import-outside-toplevel

  try:
    return soundfile.info(path).duration
  except Exception:  # pylint: disable=broad-except  (libsndfile's errors have no common base)
    return None


def load(path: str, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """Reads any audio file librosa can decode as float32 mono at params.sample_rate (files longer
  than MAX_SECONDS are refused from their header, unread)."""
  import librosa  # pylint: disable=import-outside-toplevel  (slow import; workers pay it once)

  seconds = duration(path)
  if seconds is not None and seconds > MAX_SECONDS:
    raise AudioError(
      f'lasts {seconds / 3600:.1f} h; files of up to {MAX_SECONDS / 3600:.0f} h are read: cut it '
      f'into parts (e.g. sox IN OUT trim 0 3600 : newfile : restart)'
    )
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # librosa warns when it falls back to audioread
    try:
      try:
        path.encode('utf-8')
        source = path
      except UnicodeEncodeError:  # a name that is not UTF-8: the decoder cannot open it by name
        source = open(path, 'rb')  # pylint: disable=consider-using-with  (closed below)
      try:
        y, _ = librosa.load(source, sr=params.sample_rate, mono=True, res_type='soxr_hq')
      finally:
        if source is not path:
          source.close()
    except Exception as e:  # soundfile, audioread and decoder errors have no common base
      message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise AudioError(f'cannot decode audio ({message})') from None
  if y.size == 0:
    raise AudioError('no samples (empty audio)')
  if not np.isfinite(y).all():
    raise AudioError('samples are not finite')
  return y.astype(np.float32)


def from_array(wave, sample_rate: int, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """What `load` makes of a file, from samples in memory: float32 mono at params.sample_rate.

  wave: (samples,) or (samples, channels) (a web page's upload; channels are averaged), floats in
  [-1, 1] or integer PCM (scaled by its full range)."""
  y = np.asarray(wave)
  if np.issubdtype(y.dtype, np.integer):
    y = y / float(np.iinfo(y.dtype).max + 1)
  if y.ndim == 2:
    y = y.mean(axis=1)
  if y.ndim != 1:
    raise AudioError(f'expected samples (samples,) or (samples, channels), got shape {y.shape}')
  y = np.asarray(y, np.float32)
  if y.size == 0:
    raise AudioError('no samples (empty audio)')
  if not np.isfinite(y).all():
    raise AudioError('samples are not finite')
  if sample_rate != params.sample_rate:
    import librosa  # pylint: disable=import-outside-toplevel

    y = librosa.resample(y, orig_sr=sample_rate, target_sr=params.sample_rate, res_type='soxr_hq')
  return y.astype(np.float32)


def trim(
  y: np.ndarray, params: FeatureParams = FeatureParams()
) -> tuple[np.ndarray, tuple[int, int]]:
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

  return librosa.filters.mel(
    sr=params.sample_rate,
    n_fft=params.n_fft,
    n_mels=params.n_mels,
    fmin=params.fmin,
    fmax=params.fmax,
  ).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
  """Periodic Hann window (torch.hann_window's default; denominator N, not N - 1)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)


def analysis_window(params: FeatureParams = FeatureParams()) -> np.ndarray:
  """The Hann window of win_length, centred in an n_fft frame (zeros around a shorter window)."""
  window = np.zeros(params.n_fft, np.float32)
  offset = (params.n_fft - params.win_length) // 2
  window[offset : offset + params.win_length] = hann_window(params.win_length)
  return window


def edge_padding(params: FeatureParams = FeatureParams()) -> int:
  """Reflect padding on each side: (n_fft - hop) / 2, so T frames cover T * hop samples."""
  return (params.n_fft - params.hop_length) // 2


def frame_indices(count: int, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """(count, n_fft) sample indices of the first `count` analysis frames in the padded waveform."""
  return np.arange(count)[:, None] * params.hop_length + np.arange(params.n_fft)[None, :]


def num_frames(samples: int, params: FeatureParams = FeatureParams()) -> int:
  """Frames of `log_mel` for a waveform of `samples` samples: one per hop while n_fft samples remain."""
  return 1 + (samples + 2 * edge_padding(params) - params.n_fft) // params.hop_length


BLOCK_FRAMES = 2048  # frames analysed at once: a long file's STFT never exists whole in memory


def _padded(y: np.ndarray, params: FeatureParams) -> np.ndarray:
  pad = edge_padding(params)
  if len(y) <= pad:
    raise AudioError(f'too short to analyse ({len(y)} samples)')
  return np.pad(np.asarray(y, np.float32), (pad, pad), mode='reflect')


def _magnitude_block(padded: np.ndarray, first: int, count: int, params: FeatureParams):
  """|STFT| (n_fft // 2 + 1, count) of frames first .. first + count - 1 of a padded waveform."""
  frames = padded[frame_indices(count, params) + first * params.hop_length]
  return np.abs(np.fft.rfft(frames * analysis_window(params), axis=-1)).T.astype(np.float32)


def magnitude(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """|STFT| of the reflect-padded waveform, (n_fft // 2 + 1, frames)."""
  return _magnitude_block(_padded(y, params), 0, num_frames(len(y), params), params)


def log_mel(y: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
  """float32 (n_mels, frames) log10 mel spectrogram of a waveform at params.sample_rate, computed
  BLOCK_FRAMES at a time (a 10-minute file's whole complex STFT alone would be 200 MB)."""
  padded, count = _padded(y, params), num_frames(len(y), params)
  out = np.empty((params.n_mels, count), np.float32)
  for first in range(0, count, BLOCK_FRAMES):
    block = _magnitude_block(padded, first, min(BLOCK_FRAMES, count - first), params)
    out[:, first : first + block.shape[1]] = np.log10(
      np.maximum(mel_basis(params) @ block, params.log_floor)
    )
  return out


def file_to_log_mel(path: str, params: FeatureParams = FeatureParams()) -> tuple[np.ndarray, float]:
  """Loads, trims and featurises one file; returns (log-mel, seconds of trimmed audio)."""
  y, _ = trim(load(path, params), params)
  return log_mel(y, params), len(y) / params.sample_rate


# What an output's extension asks for: soundfile's (format, subtype) of each audio file we write.
OUTPUT_FORMATS = {
  '.wav': ('WAV', 'PCM_16'),
  '.flac': ('FLAC', 'PCM_16'),
  '.ogg': ('OGG', 'VORBIS'),
  '.mp3': ('MP3', 'MPEG_LAYER_III'),
}


def output_format(path: str) -> tuple[str, str]:
  """(format, subtype) that `path`'s extension names; AudioError naming the ones there are."""
  extension = os.path.splitext(str(path))[1].lower()
  if extension not in OUTPUT_FORMATS:
    raise AudioError(
      f'{path}: the extension names no audio format written here; end it in '
      + ', '.join(OUTPUT_FORMATS)
    )
  return OUTPUT_FORMATS[extension]


def write_audio(path: str, wave: np.ndarray, sample_rate: int) -> None:
  """Audio in the format `path`'s extension names (16-bit PCM for .wav and .flac), written under a
  temporary name and renamed (its folder made if needed)."""
  import soundfile  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.core import fileio  # pylint: disable=import-outside-toplevel  (workers never write)

  file_format, subtype = output_format(path)
  wave = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
  # Encoded in memory first: libsndfile reports a failed write (a full disk) as "System error."
  # with no errno; a file's own write carries it.
  buffer = io.BytesIO()
  soundfile.write(buffer, wave, sample_rate, subtype=subtype, format=file_format)

  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(buffer.getbuffer())

  fileio.atomic_write(path, write)


# ---- the same features in JAX, for batches on the device -------------------------------------------
# jax is imported inside these functions: preprocessing workers import this module and never need it.


def stft(y, params: FeatureParams = FeatureParams()):
  """Complex STFT (batch, frames, n_fft // 2 + 1) of y (batch, samples), framed as `magnitude`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  pad = edge_padding(params)
  padded = jnp.pad(y, ((0, 0), (pad, pad)), mode='reflect')
  frames = padded[:, frame_indices(num_frames(y.shape[1], params), params)]
  return jnp.fft.rfft(frames * analysis_window(params), axis=-1)


def istft(spec, params: FeatureParams = FeatureParams()):
  """Least-squares inverse of `stft`: windowed overlap-add, normalised by the summed squared window."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  batch, frame_count, _ = spec.shape
  window = analysis_window(params)
  frames = jnp.fft.irfft(spec, n=params.n_fft, axis=-1) * window
  index = frame_indices(frame_count, params)
  length = (frame_count - 1) * params.hop_length + params.n_fft
  signal = jnp.zeros((batch, length), frames.dtype).at[:, index].add(frames)
  norm = np.zeros(length, np.float32)
  np.add.at(norm, index, np.broadcast_to(window**2, index.shape))
  signal = signal / np.maximum(norm, 1e-8)
  pad = edge_padding(params)
  return signal[:, pad : length - pad]


def batch_log_mel(y, params: FeatureParams = FeatureParams(), eps: float = 0.0):
  """`log_mel` of waveforms (batch, samples) in JAX: (batch, n_mels, samples // hop).

  eps > 0 keeps the magnitude's gradient finite where a bin is exactly zero (generated audio)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  spec = stft(y, params)
  mag = jnp.sqrt(spec.real**2 + spec.imag**2 + eps) if eps else jnp.abs(spec)
  mel = jnp.einsum('mf,btf->bmt', mel_basis(params), mag)
  return jnp.log10(jnp.maximum(mel, params.log_floor))
