"""Feature files -> batches of random fixed-length crops, with grain.

Each batch is `{'mel': float32 (batch, n_mels, crop_frames), 'speaker': int32 (batch,)}`. The order is a
pure function of the seed and the position in the stream, so the iterator state (one position) can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run would. Each JAX process
reads its own disjoint shard of the files.
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


def make_dataset(features_dir: str, *, batch_size: int, crop_frames: int = 128, seed: int = 0,
                 shard_index: int = 0, shard_count: int = 1,
                 num_epochs: int | None = None) -> grain.MapDataset:
  """Batches of random crops from this shard's files, reshuffled each epoch.

  batch_size is per process (the global batch / the number of processes). With num_epochs=None the
  stream is infinite; batch i is `dataset[i]`, whatever happened before.
  """
  source = FeatureSource(list_features(features_dir))
  dataset = grain.MapDataset.source(source)
  if shard_count > 1:
    # Interleaved shards: disjoint, and every process gets speakers from the whole corpus.
    dataset = dataset[shard_index::shard_count]
  if len(dataset) < batch_size:
    raise corpus.CorpusError(f'{features_dir}: {len(dataset)} files for this process, fewer than '
                             f'its batch of {batch_size}')
  return (dataset.seed(seed).shuffle().repeat(num_epochs).random_map(_Crop(crop_frames))
          .batch(batch_size, drop_remainder=True))


def make_iterator(dataset: grain.MapDataset, *, prefetch: int = 4, threads: int = 2):
  """A checkpointable iterator (`get_state` / `set_state`) that reads ahead in background threads."""
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(options))


def speakers(features_dir: str) -> list[str]:
  """The speakers of a features folder, in the order of their ids in batches."""
  return FeatureSource(list_features(features_dir)).speakers
