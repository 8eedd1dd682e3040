"""F0 beside the features (preprocess.py --f0=METHOD): what `vqvc+_pitch` trains and converts with.

    OUTPUT_DIR/f0/train/{speaker}_{utterance}.npy   float32 (1, frames): Hz per log-mel frame, 0 unvoiced
    OUTPUT_DIR/f0/test/...

Each F0 file is made from the same trimmed audio as its feature and has its frame count; the method and
its range (`f0.F0Params`) are in the manifest (`f0_params`). Made once: a later run makes only the
files that are missing or no longer match their feature, and removes those whose feature is gone. A
folder's F0 is made with one method: another one is refused (a new output folder takes it).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from skipvqvc_jax import audio, corpus, f0, storage
from skipvqvc_jax.errors import AudioError, ConversionError, CorpusError
from skipvqvc_jax.fileio import save_npy
from skipvqvc_jax.workers import map_files

F0_DIR = 'f0'


def f0_path(output_dir: str, feature_rel: str) -> str:
  """The F0 file of the feature `feature_rel` (e.g. train/p225_001.npy) of `output_dir`."""
  return storage.join(output_dir, F0_DIR, *feature_rel.split(os.sep))


def f0_of_feature(feature_file: str) -> str:
  """The F0 file beside a feature file OUTPUT_DIR/{side}/NAME.npy."""
  side_dir = storage.dirname(storage.abspath(feature_file))
  return storage.join(
    storage.dirname(side_dir), F0_DIR, storage.basename(side_dir), storage.basename(feature_file)
  )


def _estimate(task) -> dict:
  """Worker: one source -> its F0 file (estimated, or CREPE's CSV beside it read for the trimmed
  span); never raises for bad audio."""
  source_path, out_path, params, f0_params, frames = task
  try:
    y, (start, end) = audio.trim(audio.load(source_path, params), params)
    if f0_params.method == f0.CREPE:
      span = (start / params.sample_rate, end / params.sample_rate)
      contour = f0.read_crepe_csv(f0.crepe_csv_of(source_path), frames, span)
    else:
      contour = f0.f0_per_frame(y, params, f0_params)
  except (AudioError, CorpusError, OSError) as e:
    return dict(ok=False, reason=str(e))
  if len(contour) != frames:
    return dict(ok=False, reason=f'{len(contour)} F0 frames for a feature of {frames}')
  save_npy(out_path, contour[None, :])
  return dict(ok=True)


def check_params(manifest: dict, f0_params: f0.F0Params | None, output_dir: str) -> None:
  """Refuses F0 of another method or range than the folder's, and a method that cannot run here
  (checked once, before any file: it was one misleading line per file, and exit 0)."""
  found = manifest.get('f0_params')
  if f0_params is not None and found is not None and found != f0_params.to_dict():
    raise CorpusError(
      f'{output_dir} holds F0 made with {found}, not {f0_params.to_dict()}: rerun with '
      f'--f0={found["method"]}, or use a new output dir'
    )
  if f0_params is not None or found is not None:
    f0.check_method(f0_params or f0.F0Params.from_dict(found))


def make(
  output_dir: str,
  items: list[dict],
  source_root: str,
  params: audio.FeatureParams,
  f0_params: f0.F0Params,
  *,
  workers: int | None,
  progress: bool,
  log: Callable[[str], None],
) -> list[dict]:
  """Makes the F0 files `items` (manifest items) lack; returns the items whose F0 failed (source,
  reason)."""
  wanted = {f0_path(output_dir, item['file']): item for item in items}
  root = storage.join(output_dir, F0_DIR)
  for side in ('train', 'test'):  # F0 whose feature is gone or moved: removed
    folder = storage.join(root, side)
    if storage.isdir(folder):
      for name in storage.listdir(folder):
        if storage.join(folder, name) not in wanted:
          storage.remove(storage.join(folder, name))
  tasks, pending = [], []
  for path, item in wanted.items():
    if corpus.readable_frames(path, 1) != item['frames']:
      storage.makedirs(storage.dirname(path))
      source = os.path.join(source_root, item['source'])
      tasks.append((source, path, params, f0_params, item['frames']))
      pending.append(item)
  if tasks:
    log(f'F0 ({f0_params.method}): {len(tasks)} files to estimate, {len(items) - len(tasks)} made')
  failed = []
  for item, result in zip(pending, map_files(_estimate, tasks, workers, progress, log, 'F0')):
    if not result['ok']:
      failed.append(dict(source=item['source'], reason=f'F0: {result["reason"]}'))
      log(f'no F0 for {item["source"]}: {result["reason"]}')
  return failed


def source_f0(source, sr, params: audio.FeatureParams, f0_params: f0.F0Params, model: str):
  """A conversion source's F0 in Hz per frame: estimated from an audio file or samples at rate
  `sr` (trimmed as its features are), or the F0 file beside a .npy feature."""
  name = os.fspath(source) if isinstance(source, str | os.PathLike) else 'the audio array'
  try:
    if name.endswith('.npy'):
      path = f0_of_feature(name)
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
