"""Feature files -> batches of random fixed-length crops, with grain.

Each batch is `{'mel': float32 (batch, n_mels, crop_frames), 'speaker': int32 (batch,)}`, and with F0
(`make_dataset(..., f0=True)`) `'f0'`: float32 (batch, crop_frames) in Hz, the same crop of each
feature's F0 file (`data.f0_files`). The order is a
pure function of the seed and the position in the stream, so the iterator state (one position) can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run would.

Several processes: the stream of crops is defined once for the whole job (shuffled over every file), and
global batch k is its k-th run of `global_batch` crops; process p reads only its contiguous slice of each
global batch (see CropBatches). So the processes read disjoint examples (each crop is read by exactly
one of them) and the global batches are the same whatever the number of processes: a pod run trains on
exactly the batches of a single-process run.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence

import grain
import numpy as np

from skipvqvc_jax.core.errors import CorpusError
from skipvqvc_jax.data import corpus, feature_files

IN_MEMORY_LIMIT = 1 << 30  # feature sets up to 1 GiB are read once and kept in RAM


class FeatureSource(grain.sources.RandomAccessDataSource):
  """Random access to (array, speaker id) pairs: `{key: (channels, time) array, 'speaker': id}`.

  The arrays are log-mels (key 'mel') or, for vocoder training, cached waveforms (key 'audio').

  Small feature sets are read into memory once; larger ones are memory-mapped per access, so a crop
  reads only itself. Opening and mapping a file costs more than the crop, and on a machine whose cores
  also run the step that showed: 15% slower steps at the demo preset with mapped files (benchmarks).
  """

  def __init__(self, files: Sequence[str], key: str = 'mel', f0: bool = False):
    self.files, self.key = list(files), key
    self.f0 = [feature_files.load_f0(f) for f in self.files] if f0 else None
    index = {s: i for i, s in enumerate(speaker_names(self.files))}
    self.speaker_ids = np.array([index[corpus.speaker_of(f)] for f in self.files], np.int32)
    in_memory = sum(os.path.getsize(f) for f in self.files) <= IN_MEMORY_LIMIT
    first = feature_files.load_features(self.files[0], mmap=not in_memory)
    self.rows = first.shape[0] if first.ndim == 2 else None
    # Each file read and checked once (its band count against the first's).
    self.arrays = (
      [first] + [feature_files.load_features(f, rows=self.rows) for f in self.files[1:]]
      if in_memory
      else None
    )
    self._checked: set[int] = set()  # memory-mapped files checked on their first read

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> dict:
    if self.arrays is not None:
      array = self.arrays[i]
    else:
      array = feature_files.load_features(self.files[i], mmap=True)
      if i not in self._checked:
        feature_files.check_feature(self.files[i], array, self.rows)
        self._checked.add(i)
    return {self.key: array, 'speaker': self.speaker_ids[i]}


def random_crop(mel: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
  """A random window of `frames` frames; shorter mels are reflect-padded at the end (the original's way)."""
  return crop_at(mel, frames, rng.random())


def crop_at(mel: np.ndarray, frames: int, position: float) -> np.ndarray:
  """The window starting at `position` (in [0, 1)) of the possible starts, or the padded mel."""
  length = mel.shape[1]
  if length > frames:
    start = int(position * (length - frames + 1))
    return np.array(mel[:, start : start + frames], np.float32)
  return np.pad(np.asarray(mel, np.float32), ((0, 0), (0, frames - length)), mode='reflect')


class CropBatches(grain.MapDataset):
  """Batch k of this process: its slice of global batch k of random crops.

  Epoch e visits the files in the order `default_rng([seed, e]).permutation`, global_batch at a time
  (the remainder of an epoch is dropped); global batch k draws its crop positions from
  `default_rng([seed, k])`. Process p takes positions [p * local, (p + 1) * local) of each global batch.
  Everything is per batch and vectorised: no per-example machinery beyond the crop copy.
  """

  def __init__(
    self,
    source: FeatureSource,
    *,
    local_batch: int,
    crop_frames: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
  ):
    super().__init__()
    self.source, self.local, self.frames, self.seed = source, local_batch, crop_frames, seed
    self.global_batch = local_batch * shard_count
    self.offset = shard_index * local_batch
    self.per_epoch = len(source) // self.global_batch
    # Batches are read roughly in order (by prefetch threads, so concurrently): the current and the
    # next epoch's orders are enough, and lru_cache returns each caller its own epoch's order.
    self._epoch_order = functools.lru_cache(maxsize=2)(self._permutation)

  def __len__(self) -> int:
    return sys.maxsize  # an endless stream: the step budget ends training, not the data

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, k = divmod(index, self.per_epoch)
    first = k * self.global_batch + self.offset
    files = self._epoch_order(epoch)[first : first + self.local]
    positions = np.random.default_rng([self.seed, index]).random(self.global_batch)
    positions = positions[self.offset : self.offset + self.local]
    key = self.source.key
    crops = [crop_at(self.source[i][key], self.frames, u) for i, u in zip(files, positions)]
    batch = {key: np.stack(crops), 'speaker': self.source.speaker_ids[files]}
    if self.source.f0 is not None:  # the same window of each F0
      f0 = [crop_at(self.source.f0[i], self.frames, u)[0] for i, u in zip(files, positions)]
      batch['f0'] = np.stack(f0)
    return batch


def make_dataset(
  features_dir: str,
  *,
  batch_size: int,
  crop_frames: int = 128,
  seed: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  key: str = 'mel',
  f0: bool = False,
) -> grain.MapDataset:
  """Batches of random crops, reshuffled each epoch; this process's slice of every global batch.

  batch_size is per process (the global batch / the number of processes). The stream is endless;
  batch i is `dataset[i]`, whatever happened before. crop_frames counts the last axis: frames of mels,
  or samples of waveforms (key='audio'). With f0, batches carry each crop's F0 (`data.f0_files`).
  """
  source = FeatureSource(feature_files.list_features(features_dir), key=key, f0=f0)
  if len(source) < batch_size * shard_count:
    raise CorpusError(
      f'{features_dir}: {len(source)} files, fewer than the global batch of '
      f'{batch_size * shard_count}'
    )
  return CropBatches(
    source,
    local_batch=batch_size,
    crop_frames=crop_frames,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
  )


def make_iterator(dataset: grain.MapDataset, *, prefetch: int = 4, threads: int = 2):
  """A checkpointable iterator (`get_state` / `set_state`) that reads ahead in background threads."""
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(options))


def speaker_names(files: Sequence[str]) -> list[str]:
  """The speakers of feature files, in the order of their ids in batches."""
  return sorted({corpus.speaker_of(f) for f in files})
