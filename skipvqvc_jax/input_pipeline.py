"""Feature files -> batches of random fixed-length crops, with grain.

Each batch is `{'mel': float32 (batch, n_mels, crop_frames), 'speaker': int32 (batch,)}`. The order is a
pure function of the seed and the position in the stream, so the iterator state (one position) can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run would.

Several processes: the stream of crops is defined once for the whole job (shuffled over every file), and
global batch k is its k-th run of `global_batch` crops; process p reads only its contiguous slice of each
global batch. So the processes read disjoint examples (each crop is read by exactly one of them) and the
global batches are the same whatever the number of processes: a pod run trains on exactly the batches of
a single-process run.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import grain
import numpy as np

from skipvqvc_jax import corpus


def list_features(features_dir: str) -> list[str]:
  """The sorted `.npy` feature files of a folder; an error that says what to do when there are none."""
  if not os.path.isdir(features_dir):
    raise corpus.CorpusError(f'features dir {features_dir} does not exist; run preprocess.py '
                             f'INPUT_DIR OUTPUT_DIR and point the config at OUTPUT_DIR/train')
  files = sorted(os.path.join(features_dir, f) for f in os.listdir(features_dir)
                 if f.endswith('.npy') and not f.startswith('.'))
  if not files:
    raise corpus.CorpusError(f'features dir {features_dir} holds no .npy features')
  return files


class FeatureSource(grain.sources.RandomAccessDataSource):
  """Random access to (mel, speaker id) pairs; mels are memory-mapped, so a crop reads only itself."""

  def __init__(self, files: Sequence[str]):
    self.files = list(files)
    self.speakers = sorted({corpus.speaker_of(f) for f in self.files})
    index = {s: i for i, s in enumerate(self.speakers)}
    self.speaker_ids = np.array([index[corpus.speaker_of(f)] for f in self.files], np.int32)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> dict:
    return dict(mel=np.load(self.files[i], mmap_mode='r'), speaker=self.speaker_ids[i])


def random_crop(mel: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
  """A random window of `frames` frames; shorter mels are reflect-padded at the end (the original's way)."""
  length = mel.shape[1]
  if length > frames:
    start = int(rng.integers(0, length - frames + 1))
    return np.array(mel[:, start:start + frames], np.float32)
  return np.pad(np.asarray(mel, np.float32), ((0, 0), (0, frames - length)), mode='reflect')


@dataclasses.dataclass(frozen=True)
class _Crop:
  frames: int

  def __call__(self, element: dict, rng: np.random.Generator) -> dict:
    return dict(mel=random_crop(element['mel'], self.frames, rng), speaker=element['speaker'])


class _ProcessSlice(grain.MapDataset):
  """Element j of process p's stream: element (j // local) * global + p * local + j % local."""

  def __init__(self, parent: grain.MapDataset, local_batch: int, shard_index: int, shard_count: int):
    super().__init__(parent)
    self._local, self._index, self._count = local_batch, shard_index, shard_count

  def __len__(self) -> int:
    return len(self._parent) // (self._local * self._count) * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, offset = divmod(index, self._local)
    return self._parent[(batch * self._count + self._index) * self._local + offset]


def make_dataset(features_dir: str, *, batch_size: int, crop_frames: int = 128, seed: int = 0,
                 shard_index: int = 0, shard_count: int = 1,
                 num_epochs: int | None = None) -> grain.MapDataset:
  """Batches of random crops, reshuffled each epoch; this process's slice of every global batch.

  batch_size is per process (the global batch / the number of processes). With num_epochs=None the
  stream is infinite; batch i is `dataset[i]`, whatever happened before.
  """
  source = FeatureSource(list_features(features_dir))
  if len(source) < batch_size * shard_count:
    raise corpus.CorpusError(f'{features_dir}: {len(source)} files, fewer than the global batch of '
                             f'{batch_size * shard_count}')
  # Crops are drawn per position in the global stream, so they do not depend on the process count.
  dataset = (grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
             .random_map(_Crop(crop_frames)))
  if shard_count > 1:
    dataset = _ProcessSlice(dataset, batch_size, shard_index, shard_count)
  return dataset.batch(batch_size, drop_remainder=True)


def make_iterator(dataset: grain.MapDataset, *, prefetch: int = 4, threads: int = 2):
  """A checkpointable iterator (`get_state` / `set_state`) that reads ahead in background threads."""
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(options))


def speakers(features_dir: str) -> list[str]:
  """The speakers of a features folder, in the order of their ids in batches."""
  return FeatureSource(list_features(features_dir)).speakers
