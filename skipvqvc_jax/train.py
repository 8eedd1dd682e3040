"""Training: the one loop (`train_and_evaluate`) and the contract of the tasks it runs (`Task`).

The loop is the same for every task (`tasks.make`: voice conversion or a vocoder): where the run starts
(`starting_state`), data order, the jitted step, evaluation and samples, orbax checkpoints with the data
iterator's position, preemption and divergence. Everything task-specific is behind `Task`.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any, Callable, Protocol

import jax
import ml_collections
from absl import logging

from skipvqvc_jax import checkpoints, input_pipeline, progress, sharding, summaries, tasks
from skipvqvc_jax.errors import ConfigError, TrainingError
from skipvqvc_jax.fileio import save_json


class Task(Protocol):
  """What the loop asks of a task (`tasks/voice_conversion.py`, `tasks/vocoder.py`).

  A task owns its data, its models, its initial state, the jitted train step, the host-side
  preparation of each batch, evaluation and samples; the loop owns order, checkpoints, logging and
  stopping. States are dicts of arrays with at least `params` and an int32 `step`.
  """

  data: input_pipeline.Data  # the resolved feature folders (written to config.json)
  log_keys: tuple[str, ...]  # metrics on the console line
  model_spec: dict  # the spec of the model `init_from` must match (`models.build` arguments)
  init_ignore: tuple[str, ...]  # spec entries `init_from` may differ in
  train_step: Callable[[dict, dict], tuple[dict, dict]]  # jitted (state, global batch) ->
  # (state, metrics); metrics hold `loss` and `finite` (False: the state was left unchanged)

  @property
  def traces(self) -> int:
    """How many times the train step was traced (compiled)."""

  def initial_state(self, params: dict | None = None) -> dict:
    """The host state at step 0, from `params` of the inference model (init_from) when given."""

  def dataset(self):
    """This process's endless stream of training batches (a grain MapDataset)."""

  def inputs(self, batch: dict, step: int) -> dict:
    """Host-side: batch `step` of the dataset -> this process's share of the step's inputs."""

  def prepare_workdir(self, workdir: str) -> None:
    """Writes what a restore of the workdir needs besides config.json and checkpoints."""

  def test_metrics(self, state: dict) -> dict:
    """Mean metrics over fixed test batches."""

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    """Mel images and audio to TensorBoard."""


class _StopRequests:
  """Turns SIGTERM (preemption) and a first Ctrl-C into a flag the loop checks, so the run saves its
  step and exits cleanly; a second Ctrl-C interrupts at once."""

  def __init__(self):
    self.requested = None  # the signal's name once one came
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name
    if signum == signal.SIGINT:
      logging.warning('Ctrl-C: saving this step and stopping (Ctrl-C again stops at once)')
      signal.signal(signal.SIGINT, self._previous.get(signum, signal.default_int_handler))

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


# Loop fields that must be whole numbers of at least this much (keep_checkpoints=0 would let orbax
# delete every checkpoint, the ones already there too).
POSITIVE_FIELDS = {'batch_size': 1, 'num_train_steps': 0, 'log_every_steps': 1, 'eval_every_steps': 1,
                   'checkpoint_every_steps': 1, 'keep_checkpoints': 1, 'eval_batches': 1}


def check_config(config) -> None:
  """One-line errors for loop settings that cannot work, before anything is read or written."""
  for field, least in POSITIVE_FIELDS.items():
    value = config.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      raise ConfigError(f'--config.{field}={value!r}: must be a whole number >= {least}')
  if not config.learning_rate > 0:
    raise ConfigError(f'--config.learning_rate={config.learning_rate!r}: must be > 0')
  tasks.check_config(config)


def check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir {workdir} is a file, not a folder: choose another --workdir')


def _save_config(config, workdir: str, data: input_pipeline.Data) -> None:
  """config.json with the resolved data folders: what a restore reads instead of flags."""
  resolved = config.to_dict()
  resolved['data'].update({key: checkpoints.portable_path(getattr(data, key), workdir)
                           for key in checkpoints.DATA_PATHS})
  save_json(os.path.join(workdir, checkpoints.CONFIG_FILE), resolved)


def _check_same_run(config, workdir: str) -> None:
  """Refuses to resume a workdir whose checkpoints belong to another model or task, before its
  config.json (which conversion and evaluation read) is touched."""
  if not checkpoints.is_workdir(workdir):
    return
  old = checkpoints.read_config(workdir)
  (old_spec, _), (new_spec, _) = checkpoints.inference_spec(old), checkpoints.inference_spec(config)
  if checkpoints.task_of(old) != checkpoints.task_of(config) or old_spec != new_spec:
    raise TrainingError(
        f'{workdir} holds a run of {old_spec}; this config trains {new_spec}: choose another '
        f'--workdir, or add --config.resume=False to move its checkpoints aside and start anew')


def _move_checkpoints_aside(ckpt: checkpoints.TrainCheckpoints, config, workdir: str):
  """resume=False: the old checkpoints (with the config.json that describes them) go to
  checkpoints.old-<time>/, and a new manager starts."""
  if jax.process_index() == 0:
    aside = f'{ckpt.directory}.old-{time.strftime("%Y%m%d-%H%M%S")}'
    logging.warning('resume=False: moving the checkpoints up to step %d to %s',
                    ckpt.latest_step(), aside)
    ckpt.close()
    os.rename(ckpt.directory, aside)
    if checkpoints.is_workdir(workdir):
      shutil.copy2(os.path.join(workdir, checkpoints.CONFIG_FILE), aside)
  sharding.sync('move-checkpoints')
  return checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints)


def starting_state(task: Task, config, ckpt: checkpoints.TrainCheckpoints, mesh):
  """Where a run starts, in this order: its latest checkpoint (with the data iterator's position);
  else `config.init_from`'s parameters; else the task's own initialisation.

  Returns (state on the mesh, data iterator state or None). init_from is read only when there is no
  checkpoint: a resumed run continues its own parameters and never reloads it."""
  if ckpt.latest_step() is not None:
    abstract = sharding.abstract_like(jax.eval_shape(task.initial_state), mesh)
    state, data_state = ckpt.restore(abstract)
    logging.info('resumed from step %d of %s', ckpt.latest_step(), ckpt.directory)
    return state, data_state
  params = None
  if config.init_from:
    model = checkpoints.load_matching(config.init_from, task.model_spec, task.init_ignore)
    params = checkpoints.params_of(model)
    logging.info('starting from the parameters of %s', config.init_from)
  return sharding.place(task.initial_state(params), mesh), None


def _metrics_line(metrics: dict, keys) -> str:
  return ' '.join(f'{k} {metrics[k]:.4f}' for k in keys if k in metrics)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns a summary."""
  check_config(config)
  check_workdir(workdir)
  lock = checkpoints.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    return _train(config, workdir)
  finally:
    lock.release()


def _train(config, workdir: str) -> dict[str, Any]:
  ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    if config.resume:
      _check_same_run(config, workdir)
    else:
      ckpt = _move_checkpoints_aside(ckpt, config, workdir)
  mesh = sharding.make_mesh()
  task = tasks.make(config, workdir, mesh)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _save_config(config, workdir, task.data)
    task.prepare_workdir(workdir)

  state, data_state = starting_state(task, config, ckpt, mesh)
  iterator = input_pipeline.make_iterator(task.dataset(), prefetch=config.data.prefetch)
  if data_state is not None:
    iterator.set_state(data_state)

  writer = summaries.Writer(workdir)
  step = int(jax.device_get(state['step']))
  summary: dict[str, Any] = dict(start_step=step, evals={}, status='finished')

  paused = [0.0]  # seconds of evaluation and checkpointing since the last log line

  def run_eval(step):
    start = time.perf_counter()
    metrics = task.test_metrics(state)
    writer.scalars(step, metrics, 'test/')
    task.write_samples(writer, state, step)
    writer.flush()
    summary['evals'][step] = metrics
    logging.info('step %d: test %s', step, _metrics_line(metrics, task.log_keys))
    paused[0] += time.perf_counter() - start

  saved = [None]  # the last step saved by this run

  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))

  def save(step, force=False):
    start = time.perf_counter()
    if saved[0] != step:  # a stop request right after a checkpoint step has nothing left to save
      _check_free_space(ckpt, state_bytes)
      ckpt.save(step, state, iterator.get_state(), force=force)
      saved[0] = step
    paused[0] += time.perf_counter() - start

  if step == 0:
    run_eval(0)
  previous = None  # the last step's metrics, checked one step late to keep the device busy
  timer, timed_steps = time.perf_counter(), 0
  rate = None  # steps/s, smoothed over log intervals, without compilation and evaluation pauses
  first_step_done = False
  with _StopRequests() as stop:
    while step < config.num_train_steps:
      if stop.requested or ckpt.reached_preemption(step):
        logging.warning('%s: saving step %d and stopping',
                        'preemption requested' if stop.requested != 'SIGINT' else 'interrupted', step)
        save(step, force=True)
        summary['status'] = 'preempted' if stop.requested != 'SIGINT' else 'interrupted'
        break
      inputs = task.inputs(next(iterator), step)
      state, metrics = task.train_step(state, sharding.global_batch(mesh, inputs))
      if previous is not None:
        _check_finite(*previous, ckpt)
      step += 1
      previous = (metrics, step)
      timed_steps += 1
      if not first_step_done:  # the first step compiles: time the ones after it
        jax.block_until_ready(metrics)
        timer, timed_steps, paused[0] = time.perf_counter(), 0, 0.0
        first_step_done = True
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        _check_finite(*previous, ckpt)
        host = jax.device_get(metrics)
        elapsed = time.perf_counter() - timer - paused[0]
        if timed_steps and elapsed > 0:
          rate = timed_steps / elapsed if rate is None else 0.7 * rate + 0.3 * timed_steps / elapsed
        host = {k: float(v) for k, v in host.items() if k != 'finite'}
        writer.scalars(step, dict(host, steps_per_sec=rate or 0.0), 'train/')
        eta = (config.num_train_steps - step) / rate if rate else 0
        speed = (f'{rate:.2f} steps/s | ETA {progress.duration(eta)}' if rate
                 else 'steps/s from the next line on (the first step compiles)')
        logging.info('step %d/%d | %s | %s', step, config.num_train_steps,
                     _metrics_line(host, task.log_keys), speed)
        summary['last_train'] = host
        summary.setdefault('train_losses', {})[step] = host['loss']
        timer, timed_steps, paused[0] = time.perf_counter(), 0, 0.0
      if step % config.eval_every_steps == 0 or step == config.num_train_steps:
        run_eval(step)
      if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
        _check_finite(*previous, ckpt)
        save(step)
  ckpt.wait()
  ckpt.close()
  writer.close()
  summary.update(step=step, compiles=task.traces, checkpoint_dir=ckpt.directory)
  if jax.process_index() == 0:
    save_json(os.path.join(workdir, 'train_summary.json'),
              dict(summary, evals={str(k): v for k, v in summary['evals'].items()},
                   train_losses={str(k): v for k, v in summary.get('train_losses', {}).items()}))
  return summary


def _check_free_space(ckpt: checkpoints.TrainCheckpoints, state_bytes: int) -> None:
  """Stops before a checkpoint that the disk cannot hold: orbax would fail half-way, in background
  threads, leaving a partial folder and a screen of tracebacks. Twice the state: room for the new
  checkpoint while the previous (asynchronous) save may still be writing, without waiting for it."""
  free, needed = shutil.disk_usage(ckpt.directory).free, 2 * state_bytes + (16 << 10)
  if free < needed:
    ckpt.wait()
    kept = ckpt.latest_step()
    raise TrainingError(
        f'the disk of {ckpt.directory} is full ({free >> 10} KiB free, a checkpoint needs about '
        f'{needed >> 10} KiB): free some space and rerun to continue from the last complete '
        f'checkpoint ({"step " + str(kept) if kept is not None else "none yet"})')


def _check_finite(metrics: dict, step: int, ckpt) -> None:
  """Stops the run when update number `step` had a non-finite loss or gradient."""
  if not bool(jax.device_get(metrics['finite'])):
    loss = float(jax.device_get(metrics['loss']))
    ckpt.wait()
    kept = ckpt.latest_step()
    raise TrainingError(
        f'loss became {loss} at step {step}: stopping; the state was not updated, and the last '
        f'good checkpoint is ' + (f'step {kept} in {ckpt.directory}' if kept is not None
                                   else 'none (no checkpoint was saved yet)'))

