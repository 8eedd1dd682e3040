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

from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import AudioError, CorpusError
from skipvqvc_jax.core.fileio import save_npy
from skipvqvc_jax.core.workers import map_files
from skipvqvc_jax.data import audio, corpus, f0

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
