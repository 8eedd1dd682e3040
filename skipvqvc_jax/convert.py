"""One-shot conversion: a trained workdir + source audio + target reference(s) -> converted audio.

Features come from `audio.file_to_log_mel` (the preprocessing code path), are normalised as the
checkpoint's trainer did, reflect-padded to a length bucket the model accepts and cropped back after
decoding, so the output has the source's duration. Encoding and decoding are jitted per length bucket
(a compile per bucket, not per file). Several target references are averaged per scale: their speaker
embeddings and their stds.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf
from flax import nnx

from skipvqvc_jax import audio, checkpoints, corpus, storage, trainers, vocoders
from skipvqvc_jax.errors import AudioError, ConversionError, UserError
from skipvqvc_jax.fileio import atomic_write, save_npy


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
  """What a conversion takes from the target: per-scale speaker embeddings and stds (batch 1)."""

  speaker: list
  std: list


class Converter:
  """A restored model and everything needed to convert audio files with it."""

  def __init__(
    self, model, config, trainer: trainers.Normalised, vocoder: str = 'griffin_lim', seed: int = 0
  ):
    self.model, self.config, self.trainer = model, config, trainer
    self.params = audio.FeatureParams.from_dict(config.features)
    self.vocoder = vocoders.get(vocoder, self.params)
    self.rng = jax.random.key(seed)
    graphdef, self._state = nnx.split(model)
    self._encode = jax.jit(lambda s, mel: nnx.merge(graphdef, s).encode_deterministic(mel))
    self._decode = jax.jit(
      lambda s, enc, speaker, rng: nnx.merge(graphdef, s).decode(
        enc.content, speaker.speaker, speaker.std, enc.rhythm, rng=rng
      )
    )

  @classmethod
  def restore(cls, workdir: str, step: int | None = None, vocoder: str = 'griffin_lim'):
    """The converter of a training workdir's checkpoint (default: the latest)."""
    if not storage.isdir(workdir):
      raise ConversionError(f'checkpoint workdir {workdir} does not exist')
    try:
      config = checkpoints.read_config(workdir)
      if checkpoints.read_model_info(workdir).kind != 'voice_conversion':
        raise ConversionError(
          f'{workdir} trains a vocoder, not a voice-conversion model: pass it '
          f'as --vocoder={workdir} and --workdir a voice-conversion run'
        )
      model = checkpoints.load(workdir, step)
      trainer = trainers.get(config.trainer, storage.join(workdir, corpus.STATS_FILE))
    except UserError as e:
      raise ConversionError(str(e)) from None
    except (ValueError, KeyError) as e:  # orbax: the stored tree is not this model's
      raise ConversionError(
        f'{workdir}: its checkpoint does not fit the model in its model.json ({type(e).__name__})'
      ) from None
    return cls(model, config, trainer, vocoder)

  # ---- features -------------------------------------------------------------------------------

  def features(self, path: str) -> np.ndarray:
    """Raw log-mel (n_mels, T) of an audio file, exactly as preprocessing makes it."""
    if not os.path.isfile(path):
      raise ConversionError(f'{path}: no such file')
    try:
      mel, _ = audio.file_to_log_mel(path, self.params)
    except AudioError as e:
      raise ConversionError(f'{path}: {e}') from None
    return mel

  def _padded(self, mel: np.ndarray) -> np.ndarray:
    frames = bucket_frames(mel.shape[1], self.model.frame_multiple)
    return self.trainer.normalize(pad_to(mel, frames))[None].astype(np.float32)

  # ---- the model ------------------------------------------------------------------------------

  def encode(self, mel: np.ndarray):
    return self._encode(self._state, self._padded(mel))

  def speaker(self, mels: Sequence[np.ndarray]) -> Speaker:
    """The mean speaker embedding and std per scale over one or more reference mels."""
    encodings = [self.encode(m) for m in mels]
    mean = lambda per_ref: [jnp.mean(jnp.stack(s), axis=0) for s in zip(*per_ref)]
    return Speaker(mean([e.speaker for e in encodings]), mean([e.std for e in encodings]))

  def convert_mel(self, source: np.ndarray, target: Speaker) -> np.ndarray:
    """Raw log-mel of the source's content in the target's voice, with the source's frame count."""
    return self.convert_scales(source, target)[-1]

  def reconstruct(self, source: np.ndarray):
    """(raw log-mel reconstruction with the source's own speaker terms, the source's encoding)."""
    scales, enc = self.reconstruct_scales(source)
    return scales[-1], enc

  def convert_scales(self, source: np.ndarray, target: Speaker) -> list[np.ndarray]:
    """`convert_mel` at every decoder scale, coarsest first (one scale for single-scale models):
    a multi-scale model's coarser outputs are its lowest bands at 1/4 and 1/2 of the frame rate."""
    return self._decode_raw(self.encode(source), target, source.shape[1])

  def reconstruct_scales(self, source: np.ndarray):
    """`reconstruct` at every decoder scale, coarsest first: (list of raw log-mels, encoding)."""
    enc = self.encode(source)
    return self._decode_raw(enc, Speaker(enc.speaker, enc.std), source.shape[1]), enc

  def _decode_raw(self, enc, speaker: Speaker, frames: int) -> list[np.ndarray]:
    out = self._decode(self._state, enc, speaker, self.rng)
    scales = [np.asarray(o[0]) for o in out]
    n_mels, padded = scales[-1].shape
    return [
      self.trainer.denormalize_bands(mel, n_mels)[:, : -(-frames * mel.shape[1] // padded)]
      for mel in scales
    ]

  # ---- files ----------------------------------------------------------------------------------

  def convert_file(
    self, source: str, targets: Sequence[str], output: str, output_mel: bool = False
  ) -> str:
    """Converts one file; writes a wav (or, with output_mel, a MelGAN-compatible .npy)."""
    return self.convert_many([(source, targets, output)], output_mel, log=lambda _: None)[0]

  def convert_many(
    self, jobs: Sequence[tuple[str, Sequence[str], str]], output_mel=False, log=print
  ) -> list[str]:
    """(source, targets, output) jobs; each set of target references is encoded once.

    The jobs are checked first (no output may overwrite an input or another job's output). A job
    whose audio cannot be used does not stop the others: the failures are listed at the end, in one
    ConversionError, after every other output is written."""
    jobs = check_jobs(jobs, output_mel)
    speakers: dict[tuple, Speaker] = {}
    written, failed = [], []
    for source, targets, output in jobs:
      try:
        key = tuple(targets)
        if key not in speakers:
          speakers[key] = self.speaker([self.features(t) for t in targets])
        mel = self.convert_mel(self.features(source), speakers[key])
      except ConversionError as e:
        if len(jobs) == 1:
          raise
        log(f'failed: {e}')
        failed.append(str(e))
        continue
      if output_mel:
        save_npy(output, mel.astype(np.float32))
      else:
        write_wav(output, self.vocoder(mel), self.vocoder.sample_rate)
      log(f'{source} -> {output}')
      written.append(output)
    if failed:
      raise ConversionError(
        f'{len(failed)} of {len(jobs)} conversions failed (the other '
        f'{len(written)} are written): '
        + '; '.join(failed[:3])
        + (' ...' if len(failed) > 3 else '')
      )
    return written


def check_jobs(jobs, output_mel: bool = False) -> list[tuple[str, list[str], str]]:
  """The jobs with their final output names, or a ConversionError before anything is converted:
  an output that is a folder, that would overwrite a source or target, or that two jobs share."""
  checked, writers = [], {}
  inputs = {os.path.realpath(p) for source, targets, _ in jobs for p in [source, *targets]}
  for source, targets, output in jobs:
    if output_mel:
      output = os.path.splitext(output)[0] + '.npy'
    if storage.isdir(output):
      raise ConversionError(
        f'output {output} is a folder: give a file name (or --source_dir with --output_dir)'
      )
    if storage.realpath(output) in inputs:
      raise ConversionError(f'output {output} would overwrite an input audio file: choose another')
    if storage.realpath(output) in writers:
      raise ConversionError(
        f'{writers[storage.realpath(output)]} and {source} would both be written '
        f'to {output}: give them different outputs'
      )
    writers[storage.realpath(output)] = source
    checked.append((source, list(targets), output))
  return checked


def write_wav(path: str, wave: np.ndarray, sample_rate: int) -> None:
  """16-bit PCM wav, written under a temporary name and renamed (its folder made if needed)."""
  wave = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
  atomic_write(path, lambda tmp: sf.write(tmp, wave, sample_rate, subtype='PCM_16', format='WAV'))


def read_pairs(path: str) -> list[tuple[str, list[str], str]]:
  """pairs.csv rows `source,target,output` (targets may be several, separated by ';'); a header row
  `source,...` and lines starting with # are skipped. Every row is checked before any is converted."""
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file')
  jobs = []
  with open(path, newline='', encoding='utf-8-sig') as f:  # utf-8-sig: spreadsheets write a BOM
    for line, row in enumerate(csv.reader(f), 1):
      if not row or row[0].startswith('#') or (line == 1 and row[0].strip() == 'source'):
        continue
      if len(row) != 3:
        raise ConversionError(f'{path} line {line}: expected source,target,output; got {row}')
      source, target, output = (x.strip() for x in row)
      targets = [t.strip() for t in target.split(';') if t.strip()]
      for name, value in (('source', source), ('target', targets), ('output', output)):
        if not value:
          raise ConversionError(f'{path} line {line}: the {name} is empty')
      jobs.append((source, targets, output))
  if not jobs:
    raise ConversionError(f'{path}: no source,target,output rows')
  return jobs


def source_dir_jobs(source_dir: str, targets: Sequence[str], output_dir: str, log=print):
  """Every audio file of source_dir converted to `targets`, written as output_dir/<name>.wav (files
  that share a name, like a.ogg and a.wav, as a_ogg.wav and a_wav.wav, said once)."""
  if not os.path.isdir(source_dir):
    raise ConversionError(f'--source_dir {source_dir} does not exist')
  files = sorted(
    f for f in os.listdir(source_dir) if os.path.splitext(f)[1].lower() in corpus.AUDIO_EXTENSIONS
  )
  if not files:
    raise ConversionError(f'--source_dir {source_dir} holds no audio files')
  stems = [os.path.splitext(f)[0] for f in files]
  shared = {stem for stem in stems if stems.count(stem) > 1}
  names = [
    f'{stem}_{os.path.splitext(f)[1][1:]}' if stem in shared else stem
    for f, stem in zip(files, stems)
  ]
  if shared:
    log(
      'files sharing a name are written with their extension: '
      + ', '.join(f'{f} -> {n}.wav' for f, n in zip(files, names) if n not in stems)
    )
  return [
    (os.path.join(source_dir, f), list(targets), storage.join(output_dir, n + '.wav'))
    for f, n in zip(files, names)
  ]
