"""Feature folders in a bucket: objects/s when an epoch reads every .npy from the bucket, against the
local mirror `feature_files.local_features` makes once per worker (its first epoch, then later ones).

    python benchmarks/bucket_features.py [--files=2000] [--frames=200] [--port=0]

Runs against the tests' Cloud Storage emulator on loopback (tests/gcs_emulator.py, the [test] extra),
so the figures are per-request overheads of a local server, not of a real bucket: real GCS adds 20-50 ms
of latency per request, which makes reading object by object far slower still, and the mirror (one
listing, then concurrent downloads) the way to train from a bucket. Prints one JSON object.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--files', type=int, default=2000)
  parser.add_argument('--frames', type=int, default=200, help='frames per feature (80 bands)')
  parser.add_argument('--port', type=int, default=0, help='0: a free one')
  args = parser.parse_args()

  from tests import gcs_emulator  # pylint: disable=import-outside-toplevel

  port = args.port or gcs_emulator.free_port()
  os.environ.update(gcs_emulator.emulator_env(port))
  server = gcs_emulator.start(port, 'bench')
  try:
    from skipvqvc_jax.core import storage
    from skipvqvc_jax.data import feature_files  # pylint: disable=import-outside-toplevel

    folder = 'gs://bench/features/train'
    rng = np.random.default_rng(0)
    mel = rng.normal(-4, 2, (80, args.frames)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
      staging = os.path.join(tmp, 'staging')
      os.makedirs(staging)
      for i in range(args.files):
        np.save(os.path.join(staging, f's{i % 20}_{i:05d}.npy'), mel)
      fs, inner = storage.filesystem(folder)
      start = time.perf_counter()
      fs.put(staging + '/', inner, recursive=True)
      upload_s = time.perf_counter() - start

      files = sorted(storage.find(folder))
      start = time.perf_counter()
      for path in files:
        feature_files.load_features(path)
      direct_s = time.perf_counter() - start

      os.environ['XDG_CACHE_HOME'] = os.path.join(tmp, 'cache')
      start = time.perf_counter()
      local = feature_files.local_features(folder)
      first_mirror_s = time.perf_counter() - start
      start = time.perf_counter()
      feature_files.local_features(folder)
      later_mirror_s = time.perf_counter() - start
      local_files = feature_files.list_features(local)
      start = time.perf_counter()
      for path in local_files:
        feature_files.load_features(path)
      local_epoch_s = time.perf_counter() - start
  finally:
    server.kill()
  n, size_kib = args.files, mel.nbytes / 1024
  print(
    json.dumps(
      dict(
        files=n,
        file_kib=round(size_kib, 1),
        upload_objects_per_s=round(n / upload_s, 1),
        epoch_reading_each_object_s=round(direct_s, 2),
        epoch_reading_each_object_objects_per_s=round(n / direct_s, 1),
        mirror_first_epoch_s=round(first_mirror_s, 2),
        mirror_first_epoch_objects_per_s=round(n / first_mirror_s, 1),
        mirror_later_epochs_check_s=round(later_mirror_s, 3),
        epoch_from_local_mirror_s=round(local_epoch_s, 3),
        local_objects_per_s=round(n / local_epoch_s, 1),
      ),
      indent=1,
    )
  )


if __name__ == '__main__':
  main()
