"""TensorBoard in a bucket: bytes uploaded by a training run whose workdir is in a bucket, with the
event file in parts (`tensorboard_part_mib`, the default 1 MiB) and as one file (0: every flush uploads
the whole file), side by side, and per hour at the rate each run had.

    python benchmarks/bucket_tensorboard.py --features=FEATURES [--steps=400] [--eval_every=5]

FEATURES is a preprocessed folder (train/, test/). Each run is `vqvc_plus.py:tiny` trained for --steps
into the tests' Cloud Storage emulator on loopback
(tests/gcs_emulator.py, the [test] extra), evaluating every --eval_every steps (each evaluation writes
the sample's mels and audio: what makes the event file grow). The emulator logs every upload's size
(its UPLOAD_LOG); the figures are the bytes under the run's tensorboard/ and the event files' size, and
what an hour at that rate would upload (parts: linear in the length; one file: quadratic).
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


def run(features: str, url: str, steps: int, eval_every: int, part_mib: float) -> float:
  """Trains tiny for `steps` into `url`; the seconds it took."""
  from skipvqvc_jax.configs import vqvc_plus  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.training import loop  # pylint: disable=import-outside-toplevel

  config = vqvc_plus.get_config('tiny')
  config.data.train_dir = os.path.join(features, 'train')
  config.data.test_dir = os.path.join(features, 'test')
  config.num_train_steps, config.eval_every_steps = steps, eval_every
  config.checkpoint_every_steps = steps  # checkpoints are not what is measured
  config.log_every_steps = 10
  config.tensorboard_part_mib = part_mib
  start = time.perf_counter()
  loop.train_and_evaluate(config, url)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--features', required=True)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--eval_every', type=int, default=5)
  args = parser.parse_args()
  from absl import logging  # pylint: disable=import-outside-toplevel

  from tests import gcs_emulator  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  port = gcs_emulator.free_port()
  os.environ.update(gcs_emulator.emulator_env(port))
  with tempfile.TemporaryDirectory() as scratch:
    uploads = os.path.join(scratch, 'uploads.log')
    server = gcs_emulator.start(port, 'bench', upload_log=uploads)
    try:
      from skipvqvc_jax.core import storage  # pylint: disable=import-outside-toplevel

      steps, rows = args.steps, {}
      for name, part_mib in (('one file', 0.0), ('parts of 1 MiB', 1.0)):
        prefix = 'run_' + name.split()[0]
        seconds = run(args.features, f'gs://bench/{prefix}', steps, args.eval_every, part_mib)
        uploaded = gcs_emulator.uploaded_bytes(uploads, f'{prefix}/tensorboard/')
        files = storage.find(f'gs://bench/{prefix}/tensorboard')
        stored = sum(len(storage.read_bytes(f)) for f in files)
        rows[name] = dict(
          steps=steps,
          seconds=round(seconds, 1),
          evaluations=steps // args.eval_every + 1,
          event_files=len(files),
          stored_mb=round(stored / 1e6, 2),
          uploaded_mb=round(uploaded / 1e6, 2),
          # An hour at this rate: parts upload in proportion to the run's length; one file, whose
          # every flush uploads all of it, in proportion to its square.
          uploaded_gb_in_an_hour=round(
            uploaded / 1e9 * (3600 / seconds) ** (1 if part_mib else 2), 2
          ),
        )
        print(f'{name}: {rows[name]}', flush=True)
    finally:
      server.kill()
      server.wait()
  print(json.dumps(rows, indent=1))


if __name__ == '__main__':
  main()
