"""Training: the one loop (`train_and_evaluate`) and the contract of the tasks it runs (`Task`).

The loop is the same for every task (`tasks.make`: voice conversion or a vocoder): where the run starts
(`starting_state`), data order, the jitted step, evaluation and samples, orbax checkpoints with the data
iterator's position, preemption and divergence. Everything task-specific is behind `Task`.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, Protocol

import jax
import ml_collections
from absl import logging

from skipvqvc_jax import checkpoints, input_pipeline, sharding, summaries, tasks
from skipvqvc_jax.errors import TrainingError
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


class _Preemption:
  """Turns SIGTERM into a flag the loop checks, so a preempted run saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _save_config(config, workdir: str, data: input_pipeline.Data) -> None:
  """config.json with the resolved data folders: what a restore reads instead of flags."""
  resolved = config.to_dict()
  resolved['data'].update(train_dir=data.train_dir, test_dir=data.test_dir,
                          stats_file=data.stats_file)
  save_json(os.path.join(workdir, checkpoints.CONFIG_FILE), resolved)


def _move_checkpoints_aside(ckpt: checkpoints.TrainCheckpoints, config, workdir: str):
  """resume=False: the old checkpoints go to checkpoints.old-<time>/, and a new manager starts."""
  if jax.process_index() == 0:
    aside = f'{ckpt.directory}.old-{time.strftime("%Y%m%d-%H%M%S")}'
    logging.warning('resume=False: moving the checkpoints up to step %d to %s',
                    ckpt.latest_step(), aside)
    ckpt.close()
    os.rename(ckpt.directory, aside)
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
  mesh = sharding.make_mesh()
  task = tasks.make(config, workdir, mesh)
  ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None and not config.resume:
    ckpt = _move_checkpoints_aside(ckpt, config, workdir)
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

  def run_eval(step):
    metrics = task.test_metrics(state)
    writer.scalars(step, metrics, 'test/')
    task.write_samples(writer, state, step)
    writer.flush()
    summary['evals'][step] = metrics
    logging.info('step %d: test %s', step, _metrics_line(metrics, task.log_keys))

  def save(step, force=False):
    ckpt.save(step, state, iterator.get_state(), force=force)

  if step == 0:
    run_eval(0)
  previous = None  # the last step's metrics, checked one step late to keep the device busy
  timer, timed_steps = time.perf_counter(), 0
  with _Preemption() as preemption:
    while step < config.num_train_steps:
      if preemption.requested or ckpt.reached_preemption(step):
        logging.warning('preemption requested: saving step %d and stopping', step)
        save(step, force=True)
        summary['status'] = 'preempted'
        break
      inputs = task.inputs(next(iterator), step)
      state, metrics = task.train_step(state, sharding.global_batch(mesh, inputs))
      if previous is not None:
        _check_finite(*previous, ckpt)
      step += 1
      previous = (metrics, step)
      timed_steps += 1
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        _check_finite(*previous, ckpt)
        host = jax.device_get(metrics)
        elapsed = time.perf_counter() - timer
        rate = timed_steps / elapsed if elapsed > 0 else 0.0
        host = {k: float(v) for k, v in host.items() if k != 'finite'}
        writer.scalars(step, dict(host, steps_per_sec=rate), 'train/')
        eta = (config.num_train_steps - step) / rate if rate else 0
        logging.info('step %d/%d | %s | %.2f steps/s | ETA %s', step, config.num_train_steps,
                     _metrics_line(host, task.log_keys), rate, _duration(eta))
        summary['last_train'] = host
        summary.setdefault('train_losses', {})[step] = host['loss']
        timer, timed_steps = time.perf_counter(), 0
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


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')
