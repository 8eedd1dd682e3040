"""The path layer on fsspec's in-memory file system (memory://): names, safe writes, the feature mirror
and the object lock, without a server (tests/core/test_cloud_storage.py runs the same against GCS)."""

import json
import os
import socket
import time

import numpy as np
import pytest

from skipvqvc_jax.core import fileio, locks, storage
from skipvqvc_jax.core.errors import TrainingError, UserError
from skipvqvc_jax.data import feature_files

pytest.importorskip('fsspec', reason='URLs need fsspec (the [gcs] extra brings it)')


@pytest.fixture
def memory():
  """A fresh memory:// folder."""
  root = f'memory://test-{time.monotonic_ns()}'
  yield root
  storage.rmtree(root)


def test_names_of_urls_and_local_paths_side_by_side(tmp_path):
  url = 'gs://bucket/runs/a'
  assert storage.join(url, 'checkpoints', '4') == 'gs://bucket/runs/a/checkpoints/4'
  assert storage.dirname(url + '/') == 'gs://bucket/runs' and storage.basename(url) == 'a'
  assert storage.relpath('gs://bucket/runs/a/features/train', url) == 'features/train'
  assert storage.is_inside('gs://bucket/runs/a/x', url) and not storage.is_inside(
    'gs://bucket/runs/ab', url
  )
  assert storage.isabs(url) and storage.free_bytes(url) is None
  # Local paths go to os.path unchanged.
  local = str(tmp_path / 'run')
  assert storage.join(local, 'x') == os.path.join(local, 'x')
  assert storage.relpath(os.path.join(local, 'x'), local) == 'x'
  assert storage.free_bytes(os.path.join(local, 'not', 'yet')) > 0


def test_safe_writes_and_reads_in_memory(memory):
  path = storage.join(memory, 'run', 'config.json')
  fileio.save_json(path, dict(a=1))
  assert fileio.load_json(path) == dict(a=1)
  fileio.save_npy(storage.join(memory, 'run', 'x.npy'), np.arange(6.0).reshape(2, 3))
  loaded = feature_files.load_features(storage.join(memory, 'run', 'x.npy'))
  assert loaded.tolist() == [[0, 1, 2], [3, 4, 5]]

  def fails_half_way(tmp):
    with open(tmp, 'w') as f:
      f.write('{"half')
    raise RuntimeError('the writer died')

  with pytest.raises(RuntimeError):
    fileio.atomic_write(path, fails_half_way)
  assert fileio.load_json(path) == dict(a=1)  # a failed write leaves the old object whole
  storage.rename(storage.join(memory, 'run'), storage.join(memory, 'moved'))
  assert sorted(storage.listdir(storage.join(memory, 'moved'))) == ['config.json', 'x.npy']
  assert not storage.exists(storage.join(memory, 'run'))


def test_the_feature_mirror_copies_only_what_changed(memory, tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  for i in range(5):
    fileio.save_npy(
      storage.join(memory, 'f', 'train', f's{i}_001.npy'), np.full((80, 10 + i), i, np.float32)
    )
  fileio.save_json(storage.join(memory, 'f', 'manifest.json'), dict(items=[]))
  files = feature_files.list_features(storage.join(memory, 'f', 'train'))
  assert [os.path.basename(f) for f in files] == [f's{i}_001.npy' for i in range(5)]
  assert all(f.startswith(str(tmp_path / 'cache')) for f in files)
  local = os.path.dirname(files[0])
  assert os.path.isfile(
    os.path.join(os.path.dirname(local), 'manifest.json')
  )  # beside, as in the bucket
  before = os.stat(files[0]).st_mtime_ns
  fileio.save_npy(storage.join(memory, 'f', 'train', 's4_001.npy'), np.zeros((80, 30), np.float32))
  assert storage.mirror(storage.join(memory, 'f', 'train'), local) == 1  # only the changed one
  assert os.stat(files[0]).st_mtime_ns == before
  assert np.load(files[4]).shape == (80, 30)


def test_a_missing_fsspec_implementation_is_one_line():
  with pytest.raises(UserError, match='nosuchscheme:// paths need'):
    storage.exists('nosuchscheme://bucket/x')


def test_the_object_lock_refuses_a_second_run_and_takes_over_a_stale_one(memory):
  first = locks.for_workdir(storage.join(memory, 'run'))
  assert isinstance(first, locks.ObjectLock)
  first.acquire()
  with pytest.raises(TrainingError, match=r'in use by another run \(pid \d+ on'):
    locks.ObjectLock(storage.join(memory, 'run')).acquire()
  first.release()
  assert not storage.exists(storage.join(memory, 'run', '.lock'))

  # A lock of a process of this host that is gone: taken over at once.
  gone = json.dumps(
    dict(owner='pid 999999 gone', host=socket.gethostname(), pid=999999, renewed=time.time())
  )
  storage.create_only(storage.join(memory, 'run', '.lock'), gone.encode())
  second = locks.ObjectLock(storage.join(memory, 'run'))
  second.acquire()
  second.release()
