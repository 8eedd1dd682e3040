"""Host time per training step: the loop's compiled program alone against the real loop, per preset.

    python benchmarks/host_time.py --features=FEATURES [--presets=vqvc_plus.py:tiny,...]
        [--steps_per_call=1,4] [--seconds=20] [--out=host_time.json]
    python benchmarks/host_time.py --features=FEATURES --parts [--steps=300]

FEATURES is a preprocessed folder (its train/ and test/). For each preset and steps_per_call k:
- "program": the loop's jitted program (`tasks.base.jit_train_steps`) run back to back over calls whose
  batches were drawn and placed on the device beforehand, in the order and shapes the loop draws them
  (the multi-scale trainers' stretched lengths included; every shape compiled before timing): what the
  devices can do when the host has nothing else to do;
- "loop": `loop.train_and_evaluate` on the same features for about --seconds, its steps/s between
  pauses (input pipeline, augmentation, dispatch, logging; evaluation and checkpoints out, new
  shapes' compilations out).
"host us/step" is 1e6 x (1/loop - 1/program): what the host adds to each step; "kept" is loop/program.
`vqvc_plus.py:tiny` stands in for an accelerator: its step is so cheap that only the host shows.
Both halves of a row run in one process, one after the other, on the same machine state.
`--parts`: the host's CPU time in each part of a step instead (see `host_parts`), which holds still on a
busy machine where rates do not.
"""

import argparse
import os
import statistics
import tempfile
import time

from common import preset_config, write_rows

PRESETS = 'vqvc_plus.py:tiny,vqvc_plus.py:n64_ch64,vqvc_plus_multi_simple.py:n64_ch64,vqvc_plus_multi.py:cpu_25min'


def _config(preset: str, features: str, k: int):
  config = preset_config(preset)
  config.data.train_dir = os.path.join(features, 'train')
  config.data.test_dir = os.path.join(features, 'test')
  if k != 1 or 'steps_per_call' in config:  # a tree before steps_per_call (--loop_only) has none
    config.steps_per_call = k
  if not config.pause_fraction:  # a test preset (tiny): the loop's default periods, as a user runs
    from skipvqvc_jax.configs import default  # pylint: disable=import-outside-toplevel

    loop_defaults = default.get_config()
    for key in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'pause_fraction'):
      config[key] = loop_defaults[key]
  return config


def program_rate(config, seconds: float) -> float:
  """Steps/s of the loop's program over about `seconds` of calls placed on the device beforehand."""
  import jax  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.training import feed, input_pipeline, sharding, tasks  # pylint: disable=all
  from skipvqvc_jax.training.tasks import base  # pylint: disable=import-outside-toplevel

  mesh = sharding.make_mesh()
  with tempfile.TemporaryDirectory() as workdir:
    task = tasks.make(config, workdir, mesh)
  k = config.steps_per_call
  source = feed.Feed(task, input_pipeline.make_iterator(task.dataset()), mesh, k, 0, 1 << 30)
  program = base.jit_train_steps(task.step, mesh)
  run = dict(
    state=sharding.place(task.initial_state(), mesh),
    health=sharding.place(base.initial_health(0), mesh),
  )

  def timed(calls) -> float:
    start = time.perf_counter()
    for call in calls:
      run['state'], metrics, run['health'] = program(run['state'], call.batches, run['health'])
    jax.block_until_ready((run['state'], metrics))
    return sum(c.steps for c in calls) / (time.perf_counter() - start)

  compiled = set()

  def compile_shapes(calls) -> None:  # each new shape compiled (and run once) before timing
    for call in calls:
      shape = str(jax.tree.map(lambda x: x.shape, call.batches))
      if shape not in compiled:
        compiled.add(shape)
        timed([call])

  first = [source.take() for _ in range(max(2, 16 // k))]
  compile_shapes(first)
  estimate = timed(first)
  more = [source.take() for _ in range(max(10, int(estimate * seconds / k)))]
  compile_shapes(more)
  # The median of 5 stretches, as the loop's rate is the median of its log intervals.
  return statistics.median(timed(more[i::5]) for i in range(5))


PARTS = ('draw', 'augment', 'place', 'dispatch')


def host_parts(config, steps: int) -> dict:
  """The main thread's CPU time (`time.thread_time`: what the host spends, however busy the machine)
  in each part of a single-step loop iteration, median microseconds over `steps` steps: drawing the
  batch from the input pipeline, the trainer's augmentation (`task.inputs`), placing it on the devices,
  and dispatching the program with the previous step in flight. Calls that compile are left out."""
  import jax  # pylint: disable=import-outside-toplevel

  from skipvqvc_jax.training import input_pipeline, sharding, tasks  # pylint: disable=all
  from skipvqvc_jax.training.tasks import base  # pylint: disable=import-outside-toplevel

  mesh = sharding.make_mesh()
  with tempfile.TemporaryDirectory() as workdir:
    task = tasks.make(config, workdir, mesh)
  iterator = input_pipeline.make_iterator(task.dataset(), prefetch=config.data.prefetch)
  program = base.jit_train_steps(task.step, mesh)
  state = sharding.place(task.initial_state(), mesh)
  health = sharding.place(base.initial_health(0), mesh)
  times = {part: [] for part in PARTS}
  for step in range(steps):
    clock = [time.thread_time()]
    batch = next(iterator)
    clock.append(time.thread_time())
    batch = task.inputs(batch, step)
    clock.append(time.thread_time())
    batches = sharding.global_batches(mesh, [batch])
    clock.append(time.thread_time())
    traces = task.traces
    state, metrics, health = program(state, batches, health)
    clock.append(time.thread_time())
    if task.traces == traces and step > 0:
      for part, start, end in zip(PARTS, clock, clock[1:]):
        times[part].append(1e6 * (end - start))
  jax.block_until_ready((state, metrics))
  return {part: statistics.median(t) for part, t in times.items()}


def print_parts(presets: str, features: str, steps: int) -> None:
  print(f'{"preset":36} ' + ' '.join(f'{p + " us":>11}' for p in PARTS) + f' {"sum us":>8}')
  for preset in presets.split(','):
    parts = host_parts(_config(preset, features, 1), steps)
    print(
      f'{preset:36} '
      + ' '.join(f'{parts[p]:11.0f}' for p in PARTS)
      + f' {sum(parts.values()):8.0f}',
      flush=True,
    )


def loop_rate(config, steps: int) -> dict:
  """The loop's summary after `steps` steps from scratch (its evaluation and checkpoint periods as
  the preset sets them, sized by pause_fraction)."""
  from skipvqvc_jax.training import loop  # pylint: disable=import-outside-toplevel

  config.num_train_steps = steps
  with tempfile.TemporaryDirectory() as workdir:
    return loop.train_and_evaluate(config, workdir)


def measure(preset: str, features: str, k: int, seconds: float) -> dict:
  program = program_rate(_config(preset, features, k), seconds / 4)
  steps = max(8 * k, int(program * seconds * 0.75) // k * k)
  summary = loop_rate(_config(preset, features, k), steps)
  between = summary['steps_per_sec_between'] or summary['steps_per_sec']
  return dict(
    preset=preset,
    steps_per_call=k,
    program_steps_per_s=program,
    loop_steps_per_s=between,
    host_us_per_step=1e6 * (1 / between - 1 / program),
    kept=between / program,
    loop_steps=summary['step'],
    log_every_steps=summary['cadence']['log_every_steps'],
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--features', required=True, help='a preprocessed folder (train/, test/)')
  parser.add_argument('--presets', default=PRESETS)
  parser.add_argument('--steps_per_call', default='1,4')
  parser.add_argument('--seconds', type=float, default=20.0, help='per row, about')
  parser.add_argument('--out', default='', help='also write the rows as JSON here')
  parser.add_argument(
    '--loop_only',
    action='store_true',
    help='the loop alone, for --steps; for a checkout of an older tree (a copy of this script run '
    'from its benchmarks/), to compare loops side by side',
  )
  parser.add_argument('--steps', type=int, default=2000, help='with --loop_only or --parts')
  parser.add_argument(
    '--parts',
    action='store_true',
    help="the host's CPU time in each part of a step (draw, augment, place, dispatch), for --steps",
  )
  args = parser.parse_args()
  if args.parts:
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)
    print_parts(args.presets, args.features, args.steps)
    return
  if args.loop_only:
    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)
    for preset in args.presets.split(','):
      summary = loop_rate(_config(preset, args.features, 1), args.steps)
      print(f'{preset:36} loop {summary["steps_per_sec_between"]:.1f} steps/s', flush=True)
    return
  from absl import logging  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  print(
    f'{"preset":36} {"k":>3} {"program steps/s":>15} {"loop steps/s":>12} {"host us/step":>12} '
    f'{"kept":>6} {"log every":>9}'
  )
  rows = []
  for preset in args.presets.split(','):
    for k in (int(k) for k in args.steps_per_call.split(',')):
      r = measure(preset, args.features, k, args.seconds)
      rows.append(r)
      print(
        f'{preset:36} {k:3d} {r["program_steps_per_s"]:15.1f} {r["loop_steps_per_s"]:12.1f} '
        f'{r["host_us_per_step"]:12.0f} {r["kept"]:6.1%} {r["log_every_steps"]:9d}',
        flush=True,
      )
  write_rows(args.out, rows)


if __name__ == '__main__':
  main()
