"""The grain input pipeline on real feature files."""

import json
import os

import numpy as np
import pytest

from skipvqvc_jax.core import errors, fileio
from skipvqvc_jax.data import corpus, feature_files
from skipvqvc_jax.training import input_pipeline


@pytest.fixture(scope='module')
def features(tmp_path_factory):
  """24 feature files of 4 speakers; lengths from shorter than a crop to several crops long.

  Every frame holds its file number and frame index, so a batch says where each crop came from.
  """
  folder = tmp_path_factory.mktemp('features')
  rng = np.random.default_rng(0)
  for i in range(24):
    frames = int(rng.integers(60, 400))
    mel = np.zeros((80, frames), np.float32)
    mel[0] = i
    mel[1] = np.arange(frames)
    fileio.save_npy(str(folder / f'spk{i % 4}_{i:03d}.npy'), mel)
  return str(folder)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_have_the_right_shape_and_speakers(features):
  dataset = input_pipeline.make_dataset(features, batch_size=4, crop_frames=128, seed=0)
  batch = dataset[0]
  assert batch['mel'].shape == (4, 80, 128) and batch['mel'].dtype == np.float32
  assert batch['speaker'].dtype == np.int32
  for mel, speaker in zip(batch['mel'], batch['speaker']):
    i = int(mel[0, 0])
    source = os.path.join(features, f'spk{i % 4}_{i:03d}.npy')
    assert input_pipeline.speaker_names(feature_files.list_features(features))[
      speaker
    ] == corpus.speaker_of(source)
    frames = np.load(source).shape[1]
    if frames >= 128:  # a contiguous window
      assert np.array_equal(mel[1], np.arange(mel[1, 0], mel[1, 0] + 128))
    else:  # the whole file, reflect-padded at the end
      assert np.array_equal(mel[1, :frames], np.arange(frames))
      assert mel[1, frames] == frames - 2


def test_deterministic_given_a_seed(features):
  a = _take(
    input_pipeline.make_iterator(input_pipeline.make_dataset(features, batch_size=4, seed=1)), 8
  )
  b = _take(
    input_pipeline.make_iterator(input_pipeline.make_dataset(features, batch_size=4, seed=1)), 8
  )
  c = _take(
    input_pipeline.make_iterator(input_pipeline.make_dataset(features, batch_size=4, seed=2)), 8
  )
  assert all(np.array_equal(x['mel'], y['mel']) for x, y in zip(a, b))
  assert not all(np.array_equal(x['mel'], y['mel']) for x, y in zip(a, c))


def test_every_file_once_per_epoch_and_reshuffled(features):
  dataset = input_pipeline.make_dataset(features, batch_size=4, seed=0)
  first = [int(v) for b in (dataset[i] for i in range(6)) for v in b['mel'][:, 0, 0]]
  second = [int(v) for b in (dataset[i] for i in range(6, 12)) for v in b['mel'][:, 0, 0]]
  assert sorted(first) == sorted(second) == list(range(24))
  assert first != second


def test_processes_read_disjoint_slices_of_the_same_global_batches(features):
  single = input_pipeline.make_dataset(features, batch_size=8, seed=0)
  shards = [
    input_pipeline.make_dataset(features, batch_size=4, seed=0, shard_index=p, shard_count=2)
    for p in range(2)
  ]
  seen = [set(), set()]
  for i in range(3):  # one epoch of 24 files
    for p in range(2):
      seen[p] |= {int(v) for v in shards[p][i]['mel'][:, 0, 0]}
    # Together the two processes hold exactly the single-process global batch, crops included.
    together = np.concatenate([shards[0][i]['mel'], shards[1][i]['mel']])
    np.testing.assert_array_equal(together, single[i]['mel'])
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(24))


def test_restored_iterator_continues_with_the_same_batches(features):
  dataset = input_pipeline.make_dataset(features, batch_size=4, seed=0)
  straight = _take(input_pipeline.make_iterator(dataset), 10)
  interrupted = input_pipeline.make_iterator(dataset)
  _take(interrupted, 4)
  state = json.loads(json.dumps(interrupted.get_state()))  # as it would be written to a checkpoint
  resumed = input_pipeline.make_iterator(
    input_pipeline.make_dataset(features, batch_size=4, seed=0)
  )
  resumed.set_state(state)
  for expected, got in zip(straight[4:], _take(resumed, 6)):
    np.testing.assert_array_equal(expected['mel'], got['mel'])
    np.testing.assert_array_equal(expected['speaker'], got['speaker'])


def test_missing_or_empty_dirs_say_what_to_do(tmp_path):
  with pytest.raises(errors.CorpusError, match='does not exist; run skipvqvc-preprocess'):
    input_pipeline.make_dataset(str(tmp_path / 'nope'), batch_size=2)
  with pytest.raises(errors.CorpusError, match='holds no .npy features'):
    input_pipeline.make_dataset(str(tmp_path), batch_size=2)
