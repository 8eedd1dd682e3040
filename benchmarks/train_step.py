"""Speed of the jitted train step: compile time, steps/s, frames/s, ms/step, peak memory, per preset.

    python benchmarks/train_step.py [--presets=vqvc_plus.py:n64_ch64,...] [--batch_sizes=8]
                                    [--steps=20] [--warmup=3] [--data=FEATURES_DIR]

A preset may set fields after it: `vqvc_plus_multi.py:cpu_25min+content_resize=0.15` (the budget
study's levers, timed beside the preset they change).

Each (preset, batch size) runs in a fresh subprocess so its peak memory is its own. The batch is
global (split over all local devices); crops are 128 frames. Without --data the step is fed one batch
kept in memory; with --data batches come from the input pipeline reading .npy files, to show whether
loading keeps up.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from common import ROOT, preset_config

DEFAULT_PRESETS = (
  'vqvc_plus.py:n64_ch64,vqvc_plus.py:n128_ch128,vqvc_plus_rhythm.py:n128_ch128,'
  'vqvc_plus_resample.py:n512_ch512,vqvc_plus.py:demo'
)


def measure(
  preset: str, batch_size: int, steps: int, warmup: int, data: str | None, dtype: str = 'float32'
) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.store import checkpoints  # pylint: disable=import-outside-toplevel
  from skipvqvc_jax.training import input_pipeline, sharding, trainers
  from skipvqvc_jax.training.tasks import voice_conversion  # pylint: disable=import-outside-toplevel

  config = preset_config(preset)
  config.batch_size = batch_size
  config.compute_dtype = dtype
  trainer = trainers.get('normal' if config.trainer == 'mean_std' else config.trainer)
  mesh = sharding.make_mesh()
  model = voice_conversion.build_model(config)
  steps_ = voice_conversion.Steps(config, model, trainer, mesh)
  params = checkpoints.params_of(model)
  state = sharding.place(voice_conversion.make_state(params, steps_.tx, config.seed), mesh)
  rng = np.random.default_rng(0)
  mel = rng.normal(-4, 2, (batch_size, 80, 128)).astype(np.float32)
  batch = sharding.global_batch(mesh, trainer.augment(mel, np.random.default_rng(0)))
  iterator = None
  if data:
    iterator = input_pipeline.make_iterator(
      input_pipeline.make_dataset(data, batch_size=batch_size, crop_frames=128, seed=0)
    )

  def next_batch(step):
    if iterator is None:
      return batch
    return sharding.global_batch(
      mesh, trainer.augment(next(iterator)['mel'], np.random.default_rng(step))
    )

  start = time.perf_counter()
  state, metrics = steps_.train_step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  compiled = {_shapes(batch)}  # a stretching trainer's batches come in a few lengths
  for i in range(warmup):
    state, metrics = steps_.train_step(state, next_batch(i))
  jax.block_until_ready(metrics)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    inputs = next_batch(warmup + i)
    state, metrics = steps_.train_step(state, inputs)
    jax.block_until_ready(metrics)
    if _shapes(inputs) in compiled:  # a new length compiles: not a step's time
      times.append(time.perf_counter() - start)
    compiled.add(_shapes(inputs))
  median = statistics.median(times)
  device = jax.devices()[0]
  peak_device = (
    (device.memory_stats() or {}).get('peak_bytes_in_use') if device.platform != 'cpu' else None
  )
  return dict(
    preset=preset,
    batch=batch_size,
    devices=f'{jax.device_count()}x {device.device_kind}',
    params_m=sum(x.size for x in jax.tree.leaves(params)) / 1e6,
    compile_s=compile_s,
    ms_per_step=median * 1e3,
    steps_per_s=1 / median,
    frames_per_s=batch_size * 128 / median,
    data='npy' if data else 'memory',
    peak_host_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    peak_device_mib=peak_device / 2**20 if peak_device else None,
  )


def _shapes(batch: dict) -> tuple:
  return tuple((k, v.shape) for k, v in sorted(batch.items()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--presets', default=DEFAULT_PRESETS)
  parser.add_argument('--batch_sizes', default='8')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--data', default=None, help='features dir to read batches from')
  parser.add_argument('--dtype', default='float32', help='compute dtype: float32 or bfloat16')
  parser.add_argument('--one', default=None, help=argparse.SUPPRESS)  # internal: preset,batch
  args = parser.parse_args()
  if args.one:
    preset, batch = args.one.rsplit(',', 1)
    print(json.dumps(measure(preset, int(batch), args.steps, args.warmup, args.data, args.dtype)))
    return
  print(
    f'{"preset":34} {"batch":>5} {"params M":>8} {"compile s":>9} {"ms/step":>8} {"steps/s":>8} '
    f'{"frames/s":>9} {"peak host MiB":>13}  devices'
  )
  for preset in args.presets.split(','):
    for batch in args.batch_sizes.split(','):
      command = [
        sys.executable,
        __file__,
        f'--one={preset},{batch}',
        f'--steps={args.steps}',
        f'--warmup={args.warmup}',
        f'--dtype={args.dtype}',
      ] + ([f'--data={args.data}'] if args.data else [])
      out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
      if out.returncode:
        print(f'{preset:34} {batch:>5} failed: {out.stderr.strip().splitlines()[-1]}')
        continue
      r = json.loads(out.stdout.strip().splitlines()[-1])
      print(
        f'{r["preset"]:34} {r["batch"]:>5} {r["params_m"]:>8.2f} {r["compile_s"]:>9.1f} '
        f'{r["ms_per_step"]:>8.1f} {r["steps_per_s"]:>8.2f} {r["frames_per_s"]:>9.0f} '
        f'{r["peak_host_mib"]:>13.0f}  {r["devices"]}'
        + (f', peak device {r["peak_device_mib"]:.0f} MiB' if r['peak_device_mib'] else '')
        + (' (npy data)' if r['data'] == 'npy' else '')
      )


if __name__ == '__main__':
  main()
