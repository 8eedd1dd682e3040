"""One-shot conversion: a model (a training workdir or a model directory) + source audio + target
reference(s) -> converted audio. `Converter` is also the Python API (`skipvqvc_jax.load`).

An F0 model (`vqvc+_pitch`) also takes the source's F0: estimated from its audio (the run's
`data.f0_method`), or read beside a feature file; `f0_shift` moves it by semitones.

Features come from `audio.file_to_log_mel` (the preprocessing code path), are normalised as the
checkpoint's trainer did, reflect-padded to a length bucket the model accepts and cropped back after
decoding, so the output has the source's duration. Encoding and decoding are jitted per length bucket
(a compile per bucket, not per file). Several target references are averaged per scale: their speaker
embeddings and their stds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from skipvqvc_jax import vocoders
from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import AudioError, ConversionError, UserError
from skipvqvc_jax.core.fileio import save_npy
from skipvqvc_jax.core.progress import Progress
from skipvqvc_jax.data import audio, corpus, f0
from skipvqvc_jax.inference import conversion_jobs, f0_input
from skipvqvc_jax.store import checkpoints
from skipvqvc_jax.training import trainers


def bucket_frames(frames: int, multiple: int) -> int:
  """The padded length for `frames`: a multiple of `multiple` and of 2^(floor(log2 frames) - 3).

  At most 1/8 of padding, and at most 8 buckets per doubling of length, so a corpus of any lengths
  compiles a handful of times.
  """
  step = max(multiple, 2 ** max(int(math.log2(max(frames, 1))) - 3, 0))
  step = math.lcm(step, multiple)
  return max(step, -(-frames // step) * step)


def pad_to(mel: np.ndarray, frames: int) -> np.ndarray:
  """Reflect-pads (n_mels, T) at the end to `frames` (the way training crops are padded)."""
  return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), mode='reflect')


class Speaker(NamedTuple):
  """What a conversion takes from the target: per-scale speaker embeddings and stds (batch 1).

  `Converter.target` makes one from reference recordings; `save` keeps it (an .npz) so the references
  need not be encoded again, `load` reads it back, `mix` blends several voices."""

  speaker: list
  std: list

  def save(self, path: str) -> None:
    """Writes this voice to `path` (an .npz of its per-scale arrays)."""
    arrays = {f'speaker_{i}': np.asarray(s) for i, s in enumerate(self.speaker)}
    arrays |= {f'std_{i}': np.asarray(s) for i, s in enumerate(self.std)}
    np.savez(path, **arrays)

  @classmethod
  def load(cls, path: str) -> Speaker:
    """A voice `save` wrote; a ConversionError for a file that is not one."""
    try:
      with np.load(path, allow_pickle=False) as data:
        scales = sum(1 for k in data.files if k.startswith('speaker_'))
        return cls(
          [jnp.asarray(data[f'speaker_{i}']) for i in range(scales)],
          [jnp.asarray(data[f'std_{i}']) for i in range(scales)],
        )
    except (OSError, ValueError, KeyError) as e:
      raise ConversionError(f'{path}: not a saved voice ({e})') from None

  @classmethod
  def mix(cls, voices: Sequence[Speaker], weights: Sequence[float] | None = None) -> Speaker:
    """The weighted mean of several voices (equal weights by default), scale by scale."""
    w = np.asarray(weights if weights is not None else [1.0] * len(voices), np.float32)
    if len(w) != len(voices) or not len(voices) or (w < 0).any() or w.sum() <= 0:
      raise ConversionError('mix: one weight >= 0 per voice, not all zero')
    w = w / w.sum()
    blend = lambda per_voice: [
      sum(wi * a for wi, a in zip(w, arrays)) for arrays in zip(*per_voice)
    ]
    return cls(blend([v.speaker for v in voices]), blend([v.std for v in voices]))


class Codes(NamedTuple):
  """`Converter.encode`'s answer: the content as codebook indices, and the speaker it was spoken by.

  codes: per scale, finest first, (frames_s,) int32 (frames_s covers the padded length); edit them
  and give them to `Converter.decode_codes`, as the original's VQVAE notebook does."""

  codes: list
  speaker: Speaker
  frames: int  # the source's frame count: decoding crops to it
  rhythm: list | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
  """What conversion needs besides a model's parameters: the trainer whose normalisation it was
  trained with, the features it reads, and which decoder output is the mel. A training workdir keeps
  these in config.json; a model directory in model.json (`conversion`), with `stats.npz` beside it
  when the trainer normalises with statistics."""

  trainer: str
  features: audio.FeatureParams = audio.FeatureParams()
  mel_output: int = -1  # index into the decoder's outputs (coarsest first) of the full mel

  def to_json(self) -> dict:
    return dict(trainer=self.trainer, features=self.features.to_dict(), mel_output=self.mel_output)

  @classmethod
  def from_config(cls, config) -> Settings:
    """The settings of a training config (its trainer and features)."""
    return cls(config.trainer, audio.FeatureParams.from_dict(config.features))

  @classmethod
  def from_json(cls, data: dict) -> Settings:
    features = audio.FeatureParams.from_dict(data.get('features', {}))
    return cls(data['trainer'], features, int(data.get('mel_output', -1)))


def read_settings(path: str) -> tuple[Settings, str]:
  """(Settings, statistics file) of a training workdir or a voice-conversion model directory."""
  if checkpoints.is_workdir(path):
    settings = Settings.from_config(checkpoints.read_config(path))
  else:
    info = checkpoints.read_model_info(path)
    if info.conversion is None:
      raise ConversionError(
        f'{path} is a model directory without conversion settings (ported before skipvqvc_jax '
        f'0.3): port it again, e.g. skipvqvc-port --checkpoint=ORIGINAL.pt --output=NEW_DIR '
        f'--trainer=NAME'
      )
    settings = Settings.from_json(info.conversion)
  return settings, storage.join(path, corpus.STATS_FILE)


# A path (audio or .npy feature), samples with their rate as a pair (samples, rate), or samples
# with the call's `sr=`.
Audio = str | os.PathLike | np.ndarray | tuple


def _with_rate(source, sr: int | None):
  """(source, its sample rate): a (samples, rate) pair taken apart; a path as it is; bare samples
  only with `sr` (a ConversionError without: no rate is assumed)."""
  if _is_pair(source):
    return np.asarray(source[0]), int(source[1])
  if isinstance(source, str | os.PathLike) or sr is not None:
    return source, sr
  raise ConversionError(
    'the audio array: give its sample rate, as (samples, rate) or sr=RATE (none is assumed)'
  )


def _is_pair(value) -> bool:
  return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int | np.integer)


def _is_folder(value) -> bool:
  return isinstance(value, str | os.PathLike) and os.path.isdir(value)


def _folder_files(folder) -> list[str]:
  return conversion_jobs.references([os.fspath(folder)])


def _raw_scales(trainer: trainers.Normalised, out: list) -> list:
  """A decoder's outputs (batch 1, normalised, padded), coarsest first -> raw log-mels (bands,
  frames); a coarser scale holds the lowest of the full mel's bands, denormalised with their
  statistics. Jitted inside the decode program: only the scale read is fetched."""
  return [trainer.denormalize_bands(scale[0], out[-1].shape[1]) for scale in out]


def _cropped(scales: list, frames: int) -> list:
  """Raw scales (on the device, padded) -> (scale, its frames of a `frames`-long source)."""
  padded = scales[-1].shape[1]
  return [(mel, -(-frames * mel.shape[1] // padded)) for mel in scales]


class Converter:
  """A restored model and everything needed to convert with it: audio files or arrays in, audio or
  log-mels out. `skipvqvc_jax.load(path)` makes one."""

  def __init__(
    self,
    model,
    settings: Settings,
    trainer: trainers.Normalised,
    vocoder: str = 'griffin_lim',
    seed: int = 0,
    config=None,
  ):
    self.model, self.settings, self.trainer, self.config = model, settings, trainer, config
    method = config.data.get('f0_method', 'pyin') if config is not None else 'pyin'
    self.f0_params = f0.F0Params(method)  # how an F0 model's source F0 is estimated
    self.params = settings.features
    self.vocoder = vocoders.get(vocoder, self.params)
    self.rng = jax.random.key(seed)
    self._voice_shapes = None  # what a voice of this model looks like (`_checked_voice`)
    graphdef, self._state = nnx.split(model)
    self._encode = jax.jit(lambda s, mel: nnx.merge(graphdef, s).encode_deterministic(mel))
    # Decoding ends in raw log-mels on the device (the denormalisation fused into the program), so
    # a conversion reads back only the scale it returns.
    self._decode = jax.jit(
      lambda s, enc, speaker, rng, contour: _raw_scales(
        trainer,
        nnx.merge(graphdef, s).decode(
          enc.content, speaker.speaker, speaker.std, enc.rhythm, f0=contour, rng=rng
        ),
      )
    )

  @classmethod
  def restore(cls, path: str, step: int | None = None, vocoder: str = 'griffin_lim'):
    """The converter of a training workdir's checkpoint (default: the latest) or of a model
    directory (`skipvqvc-port` writes one from the original's checkpoint)."""
    path = os.fspath(path)
    if not storage.isdir(path):
      raise ConversionError(
        f'{path} does not exist: give a training workdir or a model directory (skipvqvc-port)'
      )
    try:
      if checkpoints.read_model_info(path).kind != 'voice_conversion':
        raise ConversionError(
          f'{path} holds a vocoder, not a voice-conversion model: pass it as --vocoder={path} '
          f'and --model a voice-conversion run or model directory'
        )
      settings, stats = read_settings(path)
      model = checkpoints.load(path, step)
      trainer = trainers.get(settings.trainer, stats)
      config = checkpoints.read_config(path) if checkpoints.is_workdir(path) else None
    except UserError as e:
      raise ConversionError(str(e)) from None
    except (ValueError, KeyError) as e:  # orbax: the stored tree is not this model's
      raise ConversionError(
        f'{path}: its checkpoint does not fit the model in its model.json ({type(e).__name__})'
      ) from None
    return cls(model, settings, trainer, vocoder, config=config)

  @property
  def sample_rate(self) -> int:
    """The rate of the audio this converter returns (and resamples its inputs to)."""
    return self.vocoder.sample_rate

  # ---- features -------------------------------------------------------------------------------

  def features(self, path: str) -> np.ndarray:
    """Raw log-mel (n_mels, T) of an audio file, exactly as preprocessing makes it; or of a feature
    file (.npy: a log-mel preprocess.py, or the original's preprocessing, wrote)."""
    path = os.fspath(path)
    if os.path.isdir(path):
      raise ConversionError(f'{path} is a folder: give an audio file (or its files, with commas)')
    if not os.path.isfile(path):
      raise ConversionError(f'{path}: no such file')
    if path.endswith('.npy'):
      return self._checked_mel(path, np.load(path, allow_pickle=False))
    try:
      mel, _ = audio.file_to_log_mel(path, self.params)
    except AudioError as e:
      raise ConversionError(f'{path}: {e}') from None
    return mel

  def _checked_mel(self, name: str, mel) -> np.ndarray:
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] != self.params.n_mels or mel.shape[1] < 1:
      raise ConversionError(
        f'{name}: a log-mel feature must be ({self.params.n_mels}, frames); got {mel.shape}'
      )
    if not np.isfinite(mel).all():
      raise ConversionError(f'{name}: the feature holds non-finite values')
    return mel

  def mel(self, source: Audio, sr: int | None = None) -> np.ndarray:
    """Raw log-mel (n_mels, T) of an audio file, a feature file, or samples in memory at rate `sr`
    (default: this converter's rate; resampled otherwise)."""
    source, sr = _with_rate(source, sr)
    if isinstance(source, str | os.PathLike):
      return self.features(source)
    try:
      wave = audio.from_array(source, sr, self.params)
      return audio.log_mel(audio.trim(wave, self.params)[0], self.params)
    except AudioError as e:
      raise ConversionError(f'the audio array: {e}') from None

  def source_f0(self, source: Audio, sr: int | None = None) -> np.ndarray | None:
    """An F0 model's source F0 in Hz per frame (0: unvoiced): estimated from audio, or the F0 file
    preprocess.py --f0 made beside a .npy feature; None for a model that takes none."""
    if not self.model.takes_f0:
      return None
    source, sr = _with_rate(source, sr)
    return f0_input.source_f0(source, sr, self.params, self.f0_params, self.model.name)

  def _contour(self, f0_hz, f0_shift: float, frames: int):
    padded = bucket_frames(frames, self.model.frame_multiple)
    return f0_input.decoder_contour(self.model, f0_hz, f0_shift, padded)

  def _padded(self, mel: np.ndarray) -> np.ndarray:
    frames = bucket_frames(mel.shape[1], self.model.frame_multiple)
    return self.trainer.normalize(pad_to(mel, frames))[None].astype(np.float32)

  # ---- audio in, audio out (the Python API) -----------------------------------------------------

  def target(
    self, references: Audio | Sequence[Audio] | Speaker | None, sr: int | None = None
  ) -> Speaker:
    """The target voice of one or more reference recordings (their speaker terms averaged; a folder
    is its audio files), or a voice `Speaker.save`/`mix` made (checked against this model)."""
    if isinstance(references, Speaker):
      return self._checked_voice(references)
    if references is None:
      references = []
    if not isinstance(references, list | tuple) or _is_pair(references):
      references = [references]
    references = [
      r for ref in references for r in (_folder_files(ref) if _is_folder(ref) else [ref])
    ]
    if not len(references):
      if self.model.speaker_free:  # any-to-one: no speaker terms to take
        return self.no_speaker()
      raise ConversionError(
        'give at least one reference recording of the target voice (--target; only a '
        'speaker-free model converts without one)'
      )
    return self.speaker([self.mel(r, sr) for r in references])

  def _checked_voice(self, voice: Speaker) -> Speaker:
    """`voice` if its arrays have this model's shapes (a reference's encoding would); else a
    ConversionError: it was made by another model."""
    shapes = lambda v: [tuple(np.shape(a)) for a in (*v.speaker, *v.std)]
    if self._voice_shapes is None:  # a silent reference's encoding: the shapes every voice has
      self._voice_shapes = shapes(self.speaker([np.full((self.params.n_mels, 64), -5.0)]))
    if shapes(voice) != self._voice_shapes:
      raise ConversionError(
        'the saved voice was made by another model: encode its references again'
      )
    return voice

  def convert(
    self,
    source: Audio,
    target: Audio | Sequence[Audio] | Speaker | None = None,
    sr: int | None = None,
    f0_shift: float = 0.0,
  ) -> np.ndarray:
    """The source's words in the target's voice: float32 samples at `self.sample_rate`.

    source, target: a path (audio or .npy feature), a (samples, rate) pair, or samples at rate `sr`;
    target may be several references of one voice (a list, or a folder of them), or a voice
    (`Speaker`: `target()`'s answer, saved, loaded or mixed). f0_shift: semitones added to the
    source's melody (F0 models)."""
    mel = self.convert_mel(
      self.mel(source, sr), self.target(target, sr), self.source_f0(source, sr), f0_shift
    )
    return np.asarray(self.vocoder(mel), np.float32)

  def reconstruct(self, source: Audio, sr: int | None = None) -> np.ndarray:
    """The source through the model with its own voice (what the autoencoder keeps), as samples."""
    mel, _ = self.reconstruct_mel(self.mel(source, sr), self.source_f0(source, sr))
    return np.asarray(self.vocoder(mel), np.float32)

  def encode(self, source: Audio, sr: int | None = None) -> Codes:
    """The source's content codes per scale and its speaker terms (see `Codes`)."""
    mel = self.mel(source, sr)
    enc = self.encode_mel(mel)
    codes = [np.array(c[0]) for c in enc.codes]  # writable: made to be edited
    rhythm = None if enc.rhythm is None else list(enc.rhythm)
    return Codes(codes, Speaker(enc.speaker, enc.std), mel.shape[1], rhythm)

  def decode_codes(
    self,
    codes: Codes,
    target: Audio | Sequence[Audio] | None = None,
    sr: int | None = None,
  ) -> np.ndarray:
    """Samples of (possibly edited) `codes` in the voice of `target` (default: the source's own)."""
    if self.model.takes_f0:
      raise ConversionError(f'{self.model.name}: decoding edited codes needs an F0 contour too')
    speaker = codes.speaker if target is None else self.target(target, sr)
    indices = [jnp.asarray(np.asarray(c)[None]) for c in codes.codes]
    try:
      out = self.model.decode_codes(
        indices, speaker.speaker, speaker.std, codes.rhythm, rng=self.rng
      )
    except ValueError as e:
      raise ConversionError(str(e)) from None
    mel, frames = _cropped(_raw_scales(self.trainer, out), codes.frames)[self.settings.mel_output]
    return np.asarray(self.vocoder(np.asarray(mel)[:, :frames]), np.float32)

  # ---- the model ------------------------------------------------------------------------------

  def encode_mel(self, mel: np.ndarray):
    """The model's `Encoding` of a raw log-mel (padded to its length bucket, normalised)."""
    return self._encode(self._state, self._padded(mel))

  def no_speaker(self) -> Speaker:
    """A speaker-free model's (unused) speaker terms: its voice is the one it was trained on."""
    zeros = [jnp.zeros((1, 1, 1), jnp.float32)] * self.model.num_scales
    return Speaker(zeros, zeros)

  def speaker(self, mels: Sequence[np.ndarray]) -> Speaker:
    """The mean speaker embedding and std per scale over one or more reference mels."""
    encodings = [self.encode_mel(m) for m in mels]
    mean = lambda per_ref: [jnp.mean(jnp.stack(s), axis=0) for s in zip(*per_ref)]
    return Speaker(mean([e.speaker for e in encodings]), mean([e.std for e in encodings]))

  def convert_mel(self, source: np.ndarray, target: Speaker, f0_hz=None, f0_shift=0.0):
    """Raw log-mel of the source's content in the target's voice, with the source's frame count
    (an F0 model: with the source's F0 in Hz, `source_f0`, shifted by f0_shift semitones)."""
    contour = self._contour(f0_hz, f0_shift, source.shape[1])
    scales = self._decoded(self.encode_mel(source), target, source.shape[1], contour)
    mel, frames = scales[self.settings.mel_output]
    return np.asarray(mel)[:, :frames]

  def reconstruct_mel(self, source: np.ndarray, f0_hz=None):
    """(raw log-mel reconstruction with the source's own speaker terms, the source's encoding)."""
    scales, enc = self.reconstruct_scales(source, f0_hz)
    return scales[self.settings.mel_output], enc

  def convert_scales(self, source: np.ndarray, target: Speaker, f0_hz=None, f0_shift=0.0):
    """`convert_mel` at every decoder scale, coarsest first (one scale for single-scale models):
    a multi-scale model's coarser outputs are its lowest bands at 1/4 and 1/2 of the frame rate."""
    contour = self._contour(f0_hz, f0_shift, source.shape[1])
    scales = self._decoded(self.encode_mel(source), target, source.shape[1], contour)
    return [np.asarray(mel)[:, :n] for mel, n in scales]

  def reconstruct_scales(self, source: np.ndarray, f0_hz=None):
    """`reconstruct` at every decoder scale, coarsest first: (list of raw log-mels, encoding)."""
    contour = self._contour(f0_hz, 0.0, source.shape[1])
    enc = self.encode_mel(source)
    scales = self._decoded(enc, Speaker(enc.speaker, enc.std), source.shape[1], contour)
    return [np.asarray(mel)[:, :n] for mel, n in scales], enc

  def _decoded(self, enc, speaker: Speaker, frames: int, contour) -> list:
    """(raw log-mel on the device, its frames of the source's length) per scale, coarsest first."""
    return _cropped(self._decode(self._state, enc, speaker, self.rng, contour), frames)

  # ---- files ----------------------------------------------------------------------------------

  def convert_file(
    self,
    source: str,
    targets: Sequence[str],
    output: str,
    output_mel: bool = False,
    overwrite: bool = False,
  ) -> str:
    """Converts one file; writes audio in the format the output's extension names (or, with
    output_mel, a MelGAN-compatible .npy)."""
    return self.convert_many(
      [(source, targets, output)], output_mel, log=lambda _: None, overwrite=overwrite
    )[0]

  def convert_many(
    self,
    jobs: Sequence[tuple[str, Sequence[str], str]],
    output_mel=False,
    log=print,
    f0_shift=0.0,
    overwrite=False,
  ) -> list[str]:
    """(source, targets, output) jobs; each set of target references is encoded once.

    The jobs are checked first (no output may overwrite an input or another job's output, or a file
    that exists unless `overwrite`, and each names an audio format by its extension). A job
    whose audio cannot be used does not stop the others: the failures are listed at the end, in one
    ConversionError, after every other output is written. A batch (more than one job) says how far it
    is, with an ETA, and ends with an index.csv beside its outputs (source, references, output,
    seconds, error) and a line saying how many were written where."""
    jobs = conversion_jobs.check(jobs, output_mel, overwrite)
    speakers: dict[tuple, Speaker] = {}
    progress = Progress('converting', len(jobs), log, unit='files') if len(jobs) > 1 else None
    rows = []
    for source, targets, output in jobs:
      start = time.perf_counter()
      try:
        self._convert_job(source, targets, output, speakers, output_mel, f0_shift)
        log(f'{source} -> {output}')
        error = ''
      except ConversionError as e:
        if len(jobs) == 1:
          raise
        log(f'failed: {e}')
        error = str(e)
      rows.append(dict(source=source, references=';'.join(targets), output='' if error else output))
      rows[-1].update(seconds=f'{time.perf_counter() - start:.2f}', error=error)
      if progress:
        progress.update()
    return self._batch_done(jobs, rows, log)

  def _convert_job(self, source, targets, output, speakers: dict, output_mel, f0_shift) -> None:
    """One conversion, written to `output`; `speakers` keeps each set of references' encoding."""
    key = tuple(targets)
    if key not in speakers:
      features = [self.features(t) for t in targets]
      speakers[key] = self.speaker(features) if features else self.target(None)
    mel = self.convert_mel(self.features(source), speakers[key], self.source_f0(source), f0_shift)
    if output_mel:
      save_npy(output, mel.astype(np.float32))
    else:
      audio.write_audio(output, self.vocoder(mel), self.vocoder.sample_rate)

  @staticmethod
  def _batch_done(jobs, rows: list[dict], log) -> list[str]:
    """A batch's index.csv and its last line; the outputs written, or a ConversionError listing
    the failures after every other output is written."""
    written = [row['output'] for row in rows if not row['error']]
    failed = [row['error'] for row in rows if row['error']]
    if len(jobs) > 1:
      index = conversion_jobs.write_index(jobs, rows)
      log(f'{len(written)} written to {storage.dirname(index)} (index: {index})')
    if failed:
      raise ConversionError(
        f'{len(failed)} of {len(jobs)} conversions failed (the other '
        f'{len(written)} are written): '
        + '; '.join(failed[:3])
        + (' ...' if len(failed) > 3 else '')
      )
    return written
