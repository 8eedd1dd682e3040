"""Feature files on disk: listing a folder, reading one file checked, its F0, and a local mirror of a
folder that lives in a bucket. What training, evaluation and the statistics command read features with.
"""

from __future__ import annotations

import hashlib
import io
import os
import time

import numpy as np
from absl import logging

from skipvqvc_jax.core import fileio, storage
from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import corpus, f0_files

# The files beside a feature folder that conversion, evaluation and training read along with it.
CORPUS_FILES = (corpus.MANIFEST, corpus.STATS_FILE, corpus.SPLIT_FILE)


def feature_cache_root() -> str:
  return fileio.user_cache('features')


def local_features(features_dir: str) -> str:
  """A local folder holding the features of `features_dir`: itself when local; for a URL (a bucket),
  its mirror in this worker's cache (`feature_cache_root`), brought up to date with one listing and
  only the files not yet there, so an epoch reads the local disk instead of one request per file
  (benchmarks/README.md measures both). The corpus files beside it, and its F0, are mirrored too."""
  if not storage.is_url(features_dir):
    return features_dir
  features_dir = storage.abspath(features_dir)
  parent = storage.dirname(features_dir)
  key = hashlib.sha1(parent.encode()).hexdigest()[:16]
  local_parent = os.path.join(feature_cache_root(), key)
  local = os.path.join(local_parent, storage.basename(features_dir))
  if not storage.isdir(features_dir):
    raise CorpusError(
      f'features dir {features_dir} does not exist; run skipvqvc-preprocess INPUT_DIR OUTPUT_DIR '
      f'and point the config at OUTPUT_DIR/train'
    )
  start = time.perf_counter()
  try:
    fetched = storage.mirror(features_dir, local)
    storage.mirror(parent, local_parent, names=CORPUS_FILES)
    f0_dir = storage.join(parent, f0_files.F0_DIR, storage.basename(features_dir))
    if storage.isdir(f0_dir):  # the F0 beside them (preprocess.py --f0), for the F0 model
      local_f0 = os.path.join(local_parent, f0_files.F0_DIR, storage.basename(features_dir))
      fetched += storage.mirror(f0_dir, local_f0)
  except OSError as e:
    raise CorpusError(
      f'cannot copy the features of {features_dir} to {local} ({e.strerror or e}): free space '
      f'there, or set XDG_CACHE_HOME to a folder with room for them'
    ) from None
  if fetched:
    logging.info(
      'copied %d feature files of %s to %s in %.1f s',
      fetched,
      features_dir,
      local,
      time.perf_counter() - start,
    )
  return local


def random_pair(features_dir: str, seed: int | None = None) -> tuple[str, str]:
  """A (source, target) pair of feature files of two different speakers of a folder, drawn with
  `seed` (the original's inference notebook starts from such a pair): two speakers, then one file of
  each."""
  files = list_features(features_dir)
  speakers = sorted({corpus.speaker_of(f) for f in files})
  if len(speakers) < 2:
    raise CorpusError(f'{features_dir}: features of one speaker only; a pair needs two speakers')
  rng = np.random.default_rng(seed)
  source_speaker, target_speaker = rng.choice(speakers, 2, replace=False)
  of = lambda speaker: [f for f in files if corpus.speaker_of(f) == speaker]
  return str(rng.choice(of(source_speaker))), str(rng.choice(of(target_speaker)))


def list_features(features_dir: str) -> list[str]:
  """The sorted `.npy` feature files of a folder (a local mirror of one in a bucket); an error that
  says what to do when there are none."""
  features_dir = local_features(features_dir)
  if not os.path.isdir(features_dir):
    raise CorpusError(
      f'features dir {features_dir} does not exist; run skipvqvc-preprocess '
      f'INPUT_DIR OUTPUT_DIR and point the config at OUTPUT_DIR/train'
    )
  files = sorted(
    os.path.join(features_dir, f)
    for f in os.listdir(features_dir)
    if f.endswith('.npy') and not f.startswith('.')
  )
  if not files:
    raise CorpusError(f'features dir {features_dir} holds no .npy features')
  return files


def load_features(path: str, mmap: bool = False, rows: int | None = None) -> np.ndarray:
  """One feature (or cached waveform) file, checked (`check_feature`; a memory-mapped one is checked
  by its reader, `FeatureSource`); one that cannot be read is a CorpusError naming it."""
  try:
    if storage.is_url(path):
      array = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    else:
      array = np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise CorpusError(
      f'{path}: cannot read it ({str(e).splitlines()[0] if str(e) else type(e).__name__}'
      f'); preprocess its audio again'
    ) from None
  return array if mmap else check_feature(path, array, rows)


def check_feature(path: str, array: np.ndarray, rows: int | None = None) -> np.ndarray:
  """`array` if it is a (rows, frames) array of finite values; else a CorpusError naming `path` (a
  NaN feature would otherwise stop training at whatever step first draws it, naming nothing)."""
  if array.ndim != 2 or (rows is not None and array.shape[0] != rows):
    want = f'({rows}, frames)' if rows is not None else '(bands, frames)'
    raise CorpusError(
      f'{path}: shape {array.shape}, not {want} like the other features: preprocess its audio '
      f'again, or remove it'
    )
  if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
    raise CorpusError(
      f'{path}: holds values that are not finite (NaN or inf): preprocess its audio again, or '
      f'remove it'
    )
  return array


def load_f0(feature_file: str) -> np.ndarray:
  """The (1, frames) F0 of a feature file, checked against the feature's frame count."""
  path = f0_files.f0_of_feature(feature_file)
  if not storage.exists(path):
    raise CorpusError(
      f'{feature_file} has no F0 ({path}): this model is conditioned on F0; preprocess the corpus '
      f'again with --f0=harvest (or dio, pyin): the features are kept, only F0 is made'
    )
  contour = load_features(path, rows=1)
  frames = load_features(feature_file, mmap=True).shape[1]
  if contour.shape[1] != frames:
    raise CorpusError(f'{path}: {contour.shape[1]} F0 frames for a feature of {frames}: remake it')
  return contour
