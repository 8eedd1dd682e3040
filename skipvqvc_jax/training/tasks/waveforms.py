"""The audio behind a preprocessed corpus, cached for vocoder training.

A vocoder trains on audio segments and their mels. The manifest of a preprocessed corpus names each
feature file's source and trim range, so each waveform is re-read once and cut exactly as the features
were; it is stored as int16 (1, samples) `.npy` (half the disk and memory of float32) under the workdir,
where the input pipeline reads it like features.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
from absl import logging

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import AudioError, CorpusError
from skipvqvc_jax.core.fileio import save_npy
from skipvqvc_jax.core.workers import map_files
from skipvqvc_jax.data import audio, corpus
from skipvqvc_jax.training import sharding

WAVE_SCALE = 32767  # int16 full scale


def _cache_one(task) -> dict:
  """Worker: one source file -> its trimmed waveform as int16 (1, samples) .npy."""
  source_path, out_path, params, trim, frames = task
  try:
    y = corpus.trimmed_source(source_path, params, trim)
  except (AudioError, OSError) as e:
    return dict(ok=False, reason=str(e))
  if audio.num_frames(len(y), params) != frames:
    return dict(
      ok=False,
      reason=f'gives {audio.num_frames(len(y), params)} frames, the features '
      f'have {frames}: the audio changed since preprocessing',
    )
  save_npy(out_path, np.round(np.clip(y, -1.0, 1.0) * WAVE_SCALE).astype(np.int16)[None])
  return dict(ok=True)


def cache_waveforms(
  features_dir: str,
  out_dir: str,
  params: audio.FeatureParams,
  *,
  workers: int | None = None,
  progress: bool = False,
  log=None,
) -> None:
  """The trimmed waveform behind every feature file of `features_dir`, as `out_dir/<file>.npy`.

  Files already cached are kept (resumable); a source that is gone or changed is an error naming it.
  """
  root_dir = corpus.manifest_root(features_dir) or features_dir
  manifest = corpus.read_manifest(root_dir)
  subset = storage.relpath(storage.abspath(features_dir), storage.abspath(root_dir))
  corpus.check_feature_params(root_dir, params)
  source_root = corpus.audio_root(manifest['input_dir'])
  tasks = []
  cached = (
    {storage.relpath(p, out_dir) for p in storage.find(out_dir)}
    if storage.isdir(out_dir)
    else set()
  )
  for item in manifest['items']:
    if subset != '.' and not item['file'].startswith(subset + os.sep):
      continue
    out_rel = os.path.relpath(item['file'], subset)
    out_path = storage.join(out_dir, out_rel)
    if out_rel in cached:
      continue
    source_path = os.path.join(source_root, item['source'])
    if not os.path.isfile(source_path):
      raise CorpusError(
        f'{source_path}, the source of {item["file"]} in {root_dir}, is missing: '
        f'training a vocoder needs the audio the features were made from'
      )
    tasks.append((source_path, out_path, params, item.get('trim'), item['frames']))
  for task, result in zip(
    tasks, map_files(_cache_one, tasks, workers, progress, log, 'caching waveforms')
  ):
    if not result['ok']:
      raise CorpusError(f'{task[0]}: {result["reason"]}')


def waveform_dir(features_dir: str, workdir: str, params: audio.FeatureParams) -> str:
  """The cached trimmed waveforms behind `features_dir`, made on first use (by process 0)."""
  root = corpus.manifest_root(features_dir)
  if root is None:
    raise CorpusError(
      f'{features_dir} has no manifest.json: a vocoder trains on the audio a '
      f'preprocessed corpus names; point data.train_dir at the audio or at the '
      f'output of skipvqvc-preprocess'
    )
  tag = hashlib.sha1(storage.abspath(root).encode()).hexdigest()[:10]
  out = storage.join(
    workdir,
    'waveforms',
    tag,
    storage.relpath(storage.abspath(features_dir), storage.abspath(root)),
  )
  if jax.process_index() == 0:
    cache_waveforms(features_dir, out, params, log=logging.info)
  sharding.sync('waveforms')
  return out
