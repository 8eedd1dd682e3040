"""Training: the one loop (`train_and_evaluate`), the same for every task.

The loop owns where a run starts (`starting_state`), data order, the jitted step, evaluation and
samples, orbax checkpoints with the data iterator's position, preemption and divergence. Everything
task-specific (voice conversion or a vocoder) is behind `tasks.Task`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from skipvqvc_jax.core import deadlines, locks, progress, storage
from skipvqvc_jax.core.errors import ConfigError, TrainingError
from skipvqvc_jax.core.fileio import save_json
from skipvqvc_jax.data import corpus
from skipvqvc_jax.store import checkpoints, summaries
from skipvqvc_jax.training import (
  cadence,
  config_ranges,
  feed,
  input_pipeline,
  resume,
  run_data,
  sharding,
  tasks,
)
from skipvqvc_jax.training.tasks import Task, base


class _StopRequests:
  """Turns SIGTERM (preemption) and a first Ctrl-C into a flag the loop checks, so the run saves its
  step and exits cleanly. A second SIGTERM or Ctrl-C ends the process at once (exit 143 or 130) with
  one line saying where a rerun continues from, even while a save waits on storage that does not
  answer (Python would otherwise wait for orbax's threads at exit)."""

  def __init__(self):
    self.requested = None  # the signal's name once one came
    self.resumes_from = lambda: 'the last complete checkpoint'
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
    name = 'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name
    if self.requested:
      print(
        f'error: {name} again: stopped at once, without saving; the same command continues from '
        f'{self.resumes_from()}',
        file=sys.stderr,
        flush=True,
      )
      os._exit(128 + signum)  # pylint: disable=protected-access  (orbax's threads may never end)
    self.requested = signal.Signals(signum).name
    logging.warning('%s: saving this step and stopping (%s again stops at once)', name, name)

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


# Loop fields that must be whole numbers of at least this much (keep_checkpoints=0 would let orbax
# delete every checkpoint, the ones already there too).


def resolve_batch(config) -> None:
  """per_device_batch_size > 0: the global batch_size is it x every device of every process."""
  per_device = config.get('per_device_batch_size', 0)
  if isinstance(per_device, int) and not isinstance(per_device, bool) and per_device > 0:
    config.batch_size = per_device * jax.device_count()


def check_config(config) -> None:
  """One-line errors for loop settings that cannot work, before anything is read or written."""
  config_ranges.check(config)
  tasks.check_config(config)


def check_workdir(workdir: str) -> None:
  storage.check_reachable(workdir)
  if storage.isfile(workdir):
    raise ConfigError(f'--workdir {workdir} is a file, not a folder: choose another --workdir')


def _describe_workdir(config, workdir: str, task: Task) -> None:
  """config.json with the resolved data folders, and the task's model.json: what a restore reads
  instead of flags."""
  resolved = config.to_dict()
  resolved['data'].update(
    {
      key: checkpoints.portable_path(getattr(task.data, key), workdir)
      for key in checkpoints.DATA_PATHS
    }
  )
  save_json(storage.join(workdir, checkpoints.CONFIG_FILE), resolved)
  checkpoints.write_model_info(workdir, task.model_info(config))


def _move_checkpoints_aside(ckpt: checkpoints.TrainCheckpoints, config, workdir: str):
  """resume=False: the old checkpoints (with the config.json and model.json that describe them) go to
  checkpoints.old-<time>/, and a new manager starts."""
  if jax.process_index() == 0:
    aside = f'{ckpt.directory}.old-{time.strftime("%Y%m%d-%H%M%S")}'
    logging.warning(
      'resume=False: moving the checkpoints up to step %d to %s', ckpt.latest_step(), aside
    )
    ckpt.close()
    storage.rename(ckpt.directory, aside)
    for name in (checkpoints.CONFIG_FILE, checkpoints.MODEL_FILE, corpus.STATS_FILE):
      if storage.isfile(storage.join(workdir, name)):
        storage.copy(storage.join(workdir, name), storage.join(aside, name))
    # The run's statistics are fixed at its start (a resume keeps them): a new run takes its own.
    if storage.isfile(storage.join(workdir, corpus.STATS_FILE)):
      storage.remove(storage.join(workdir, corpus.STATS_FILE))
  sharding.sync('move-checkpoints')
  return checkpoints.TrainCheckpoints(
    workdir, config.keep_checkpoints, timeout=_storage_timeout(config)
  )


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
  resolve_batch(config)
  check_workdir(workdir)
  run_data.check_train_dir(config)  # before the lock: a refused run leaves no workdir
  lock = locks.for_workdir(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  abandoned = len(deadlines.abandoned)
  try:
    return _train(config, workdir)
  finally:
    if len(deadlines.abandoned) == abandoned:  # else the storage stopped answering: leave it
      lock.release()


def _storage_timeout(config) -> float:
  return config.get('storage_timeout_seconds', checkpoints.STORAGE_TIMEOUT)


def _open_run(config, workdir: str):
  """(checkpoints, mesh, task) of a run, after the checks a resume must pass."""
  ckpt = checkpoints.TrainCheckpoints(
    workdir, config.keep_checkpoints, timeout=_storage_timeout(config)
  )
  if storage.is_url(workdir) and jax.process_index() == 0:
    checkpoints.probe_writer(workdir, min(60.0, _storage_timeout(config)))
  if ckpt.latest_step() is not None:
    if config.resume:
      resume.check(config, workdir)
    else:
      ckpt = _move_checkpoints_aside(ckpt, config, workdir)
  mesh = sharding.make_mesh()
  task = tasks.make(config, workdir, mesh)
  return ckpt, mesh, task


def _train(config, workdir: str) -> dict[str, Any]:
  ckpt, mesh, task = _open_run(config, workdir)
  state, data_state = starting_state(task, config, ckpt, mesh)
  # Only a run that could start describes the workdir: a refused one (its checkpoints do not fit
  # this model) leaves the config.json and model.json of the run they belong to, or none.
  if jax.process_index() == 0:
    storage.makedirs(workdir)
    _describe_workdir(config, workdir, task)
    task.prepare_workdir(workdir)
  iterator = input_pipeline.make_iterator(task.dataset(), prefetch=config.data.prefetch)
  if data_state is not None:
    iterator.set_state(data_state)
  writer = summaries.Writer(
    workdir,
    upload_seconds=_storage_timeout(config),
    part_bytes=int(config.get('tensorboard_part_mib', 1.0) * (1 << 20)),
  )
  run = _Run(config, task, ckpt, writer, state, mesh)
  calls = feed.Feed(task, iterator, mesh, run.cadence.per_call, run.step, config.num_train_steps)
  run.position = calls.start_position
  # The settings, for TensorBoard's HParams tab and as text: runs of a study side by side.
  run.writer.hparams(config.to_dict(), [f'test/{key}' for key in task.log_keys])
  run.writer.text(run.step, 'config', '```\n' + config.to_json(indent=1) + '\n```')
  sharding.sync('start')  # the processes meet before their first collective, however late
  if run.step == 0:
    run.evaluate()
  profile = summaries.Profile(config.get('profile_steps', 0), workdir, run.step)
  with _StopRequests() as stop, profile:
    stop.resumes_from = ckpt.resumes_from
    while run.step < config.num_train_steps:
      if stop.requested or ckpt.reached_preemption(run.step):
        run.stop(stop.requested)
        break
      profile.before(run.step)
      run.train_steps(calls.take())
      calls.prepare()  # the next call's batches, placed while this one runs
      profile.after(run.step, run.state)
      last = run.step == config.num_train_steps
      if run.step % run.cadence.log_every == 0 or last:
        run.log()
      evaluates = run.step % run.cadence.eval_every == 0
      if evaluates or last:
        run.evaluate()
      if run.step % run.cadence.checkpoint_every == 0 or last:
        run.check_finite()
        run.save()
      if evaluates and not last:
        run.cadence.settle(run.step)
  return run.close(workdir)


class _Run:
  """A training run's moving parts between steps: the state, the last step's metrics and the health
  of the updates (on the device, read at log steps only, to keep the device busy), the step rate
  without pauses, and the summary."""

  def __init__(self, config, task: Task, ckpt, writer: summaries.Writer, state, mesh):
    self.config, self.task, self.ckpt, self.writer = config, task, ckpt, writer
    self.state = state
    self.step = int(jax.device_get(state['step']))
    self.program = base.jit_train_steps(task.step, mesh)
    self.health = sharding.place(base.initial_health(self.step), mesh)
    self.position = None  # the data iterator's state after the last step's batch
    self.summary: dict[str, Any] = dict(start_step=self.step, evals={}, status='finished')
    self.state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    self.metrics = None  # the last step's, on the device until a log step reads them
    self.saved = None  # the last step saved by this run
    self.paused = 0.0  # seconds of evaluation and checkpointing since the last log line
    self.timer, self.timed_steps = time.perf_counter(), 0
    self.rate = None  # steps/s, smoothed over log intervals, without compilation and pauses
    self.compiled = False
    self.cadence = cadence.Cadence(config)
    self.since_compiled = None  # (wall clock, step) at the end of the first step, which compiles
    self.compiling = 0.0  # seconds of later compilations (new shapes), out of every step rate

  def train_steps(self, call: feed.Call) -> None:
    traces, start = self.task.traces, time.perf_counter()
    self.state, metrics, self.health = self.program(self.state, call.batches, self.health)
    if self.compiled and self.task.traces != traces:  # a new shape compiled: not a step's time
      seconds = time.perf_counter() - start
      self.paused += seconds
      self.compiling += seconds
      self.cadence.compiled(seconds)
    self.step += call.steps
    self.metrics = metrics
    self.position = call.position
    self.timed_steps += call.steps
    if not self.compiled:  # the first step compiles: time the ones after it
      jax.block_until_ready(metrics)
      self.timer, self.timed_steps, self.paused = time.perf_counter(), 0, 0.0
      self.since_compiled = (self.timer, self.step)
      self.compiled = True

  def overall_rate(self) -> float | None:
    """Steps/s since the first compilation, pauses included (later compilations not): what a
    budget of wall time buys."""
    if self.since_compiled is None or self.step == self.since_compiled[1]:
      return None
    start, first = self.since_compiled
    return (self.step - first) / (time.perf_counter() - start - self.compiling)

  def _paused(self, start: float) -> None:
    self.paused += time.perf_counter() - start

  def check_finite(self) -> None:
    _check_finite(self.health, self.ckpt)

  def log(self) -> None:
    start = time.perf_counter()
    self._log()
    self.cadence.log_took(time.perf_counter() - start)

  def _log(self) -> None:
    self.check_finite()
    self.ckpt.check_for_errors()  # a checkpoint written in the background may have failed
    host = jax.device_get(self.metrics)
    elapsed = time.perf_counter() - self.timer - self.paused
    if self.timed_steps and elapsed > 0:
      rate = self.timed_steps / elapsed
      self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
      self.cadence.logged(1 / rate)
    host = {k: float(v) for k, v in host.items() if k != 'finite'}
    self.writer.scalars(self.step, dict(host, steps_per_sec=self.rate or 0.0), 'train/')
    total = self.config.num_train_steps
    # Pauses included once one has been timed: the ETA of the wall clock, not of the steps alone.
    overall = (
      self.overall_rate() if self.step - self.since_compiled[1] > self.cadence.eval_every else None
    )
    eta = (total - self.step) / (overall or self.rate) if self.rate else 0
    speed = (
      f'{self.rate:.2f} steps/s | ETA {progress.duration(eta)}'
      if self.rate
      else 'steps/s from the next line on (the first step compiles)'
    )
    logging.info(
      'step %d/%d | %s | %s', self.step, total, _metrics_line(host, self.task.log_keys), speed
    )
    self.summary['last_train'] = host
    self.summary.setdefault('train_losses', {})[self.step] = host['loss']
    self.timer, self.timed_steps, self.paused = time.perf_counter(), 0, 0.0

  def evaluate(self) -> None:
    start = time.perf_counter()
    metrics = self.task.test_metrics(self.state)
    self.writer.scalars(self.step, metrics, 'test/')
    self.task.write_samples(self.writer, self.state, self.step)
    self.writer.flush()
    self.summary['evals'][self.step] = metrics
    logging.info('step %d: test %s', self.step, _metrics_line(metrics, self.task.log_keys))
    self._paused(start)

  def save(self, force: bool = False) -> None:
    start = time.perf_counter()
    if self.saved != self.step:  # a stop request right after a checkpoint has nothing left to save
      _check_free_space(self.ckpt, self.state_bytes)
      self.ckpt.save(self.step, self.state, self.position, force=force)
      self.saved = self.step
    self._paused(start)

  def stop(self, requested: str | None) -> None:
    """SIGTERM or preemption (`requested` None: orbax's preemption notice), or Ctrl-C: save, stop."""
    interrupted = requested == 'SIGINT'
    logging.warning(
      '%s: saving step %d and stopping',
      'interrupted' if interrupted else 'preemption requested',
      self.step,
    )
    self.save(force=True)
    self.summary['status'] = 'interrupted' if interrupted else 'preempted'

  def close(self, workdir: str) -> dict[str, Any]:
    self.ckpt.wait()
    self.ckpt.close()
    self.writer.close()
    summary = dict(
      self.summary,
      step=self.step,
      compiles=self.task.traces,
      checkpoint_dir=self.ckpt.directory,
      steps_per_sec=self.rate,
      steps_per_sec_between=self.cadence.steps_per_sec(),
      steps_per_sec_overall=self.overall_rate(),
      compile_seconds=self.compiling,
      cadence=self.cadence.summary(),
    )
    if jax.process_index() == 0:
      save_json(
        storage.join(workdir, 'train_summary.json'),
        dict(
          summary,
          evals={str(k): v for k, v in summary['evals'].items()},
          train_losses={str(k): v for k, v in summary.get('train_losses', {}).items()},
        ),
      )
    return summary


def _check_free_space(ckpt: checkpoints.TrainCheckpoints, state_bytes: int) -> None:
  """Stops before a checkpoint that the disk cannot hold: orbax would fail half-way, in background
  threads, leaving a partial folder and a screen of tracebacks. Twice the state: room for the new
  checkpoint while the previous (asynchronous) save may still be writing, without waiting for it."""
  free, needed = storage.free_bytes(ckpt.directory), 2 * state_bytes + (16 << 10)
  if free is not None and free < needed:
    ckpt.wait()
    kept = ckpt.latest_step()
    raise TrainingError(
      f'the disk of {ckpt.directory} is full ({free >> 10} KiB free, a checkpoint needs about '
      f'{needed >> 10} KiB): free some space and rerun to continue from the last complete '
      f'checkpoint ({"step " + str(kept) if kept is not None else "none yet"})'
    )


def _check_finite(health: dict, ckpt) -> None:
  """Stops the run when an update since its start had a non-finite loss or gradient (`health`, from
  the device: the first such step, its loss; the state has not changed since)."""
  health = jax.device_get(health)
  if health['first_bad'] >= 0:
    loss, step = float(health['bad_loss']), int(health['first_bad'])
    ckpt.wait()
    kept = ckpt.latest_step()
    raise TrainingError(
      f'loss became {loss} at step {step}: stopping; the state was not updated, and the last '
      f'good checkpoint is '
      + (
        f'step {kept} in {ckpt.directory}'
        if kept is not None
        else 'none (no checkpoint was saved yet)'
      )
    )
