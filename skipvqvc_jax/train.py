"""Training: the one loop (`train_and_evaluate`), and the voice-conversion task it runs by default.

The loop is the same for every task (`make_task`: voice conversion here, a vocoder in
`vocoders/training.py`): data order, the jitted step, evaluation and samples, orbax checkpoints with the
data iterator's position, preemption and divergence. A task supplies its data, initial state, train step,
per-batch host preparation, evaluation and samples.

A train step is a pure function of (state, batch) -> (state, metrics), jitted once with the batch sharded
over the `data` mesh axis and the state replicated. The state is a plain dict of arrays: parameters (as
pure dicts of nnx.Param values), optimizer state, step and the base RNG key; the models' structure is
closed over. Per-step randomness is `fold_in(rng, step)`, so a resumed run draws the same noise as an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from skipvqvc_jax import (audio, checkpoints, corpus, input_pipeline, models, sharding, summaries,
                          trainers, vocoders)


class TrainingError(RuntimeError):
  """The run cannot go on (diverged, bad setup); the message says why and what is kept."""


# ---- setup ----------------------------------------------------------------------------------------

def feature_params(config) -> audio.FeatureParams:
  return audio.FeatureParams.from_dict(config.features.to_dict())


def _holds_features(folder: str) -> bool:
  return os.path.isdir(folder) and any(f.endswith('.npy') for f in os.listdir(folder))


@dataclasses.dataclass
class Data:
  train_dir: str
  test_dir: str
  stats_file: str


def resolve_data(config, workdir: str) -> Data:
  """Feature folders for training and testing; audio corpora are preprocessed into the workdir first."""
  params = feature_params(config)
  train_dir, test_dir = config.data.train_dir, config.data.test_dir
  if not train_dir:
    raise corpus.CorpusError('no training data: set --config.data.train_dir to a features folder '
                             'or an audio corpus')
  if not os.path.isdir(train_dir):
    raise corpus.CorpusError(f'data.train_dir {train_dir} does not exist')
  if not _holds_features(train_dir):
    # An audio corpus: preprocess once into the workdir (resumable, so a rerun reuses it).
    num_test = config.data.num_test_speakers
    out = _preprocess_once(train_dir, os.path.join(workdir, 'features'), params, config.seed,
                           None if num_test < 0 else num_test)
    train_dir = os.path.join(out, 'train')
    test_dir = test_dir or os.path.join(out, 'test')
  elif not test_dir:
    sibling = os.path.join(os.path.dirname(os.path.abspath(train_dir)), 'test')
    test_dir = sibling if _holds_features(sibling) else train_dir
    if test_dir == train_dir:
      logging.warning('no test_dir and no test/ beside train_dir: evaluating on training speakers')
  if os.path.isdir(test_dir) and not _holds_features(test_dir):
    # Test audio: every speaker in it is a test speaker, so all of it lands on the 'train' side.
    out = _preprocess_once(test_dir, os.path.join(workdir, 'test_features'), params, config.seed, 0)
    test_dir = os.path.join(out, 'train')
  if test_dir and not _holds_features(test_dir):
    raise corpus.CorpusError(f'data.test_dir {test_dir} holds no .npy features')
  for folder in {train_dir, test_dir}:
    manifest_dir = corpus.manifest_root(folder)
    if manifest_dir:
      corpus.check_feature_params(manifest_dir, params)
    else:
      logging.warning('%s has no manifest.json: cannot check its feature parameters', folder)
  stats_file = config.data.stats_file or os.path.join(
      corpus.manifest_root(train_dir) or os.path.dirname(os.path.abspath(train_dir)), corpus.STATS_FILE)
  return Data(train_dir, test_dir, stats_file)


def _preprocess_once(audio_dir: str, out: str, params, seed: int, num_test: int | None) -> str:
  if jax.process_index() == 0:
    logging.info('preprocessing the audio in %s into %s', audio_dir, out)
    corpus.preprocess(audio_dir, out, params, num_test_speakers=num_test, seed=seed,
                      progress=False, log=logging.info)
  _sync('preprocess')
  return out


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def build_model(config, seed_offset: int = 0) -> models.VQVCPlus:
  return models.build(config.model.name, channel=config.model.channel,
                      n_embed=config.model.n_embed, gru_init=config.model.gru_init,
                      seed=config.seed + seed_offset)


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))


def init_params(config, model: models.VQVCPlus) -> dict:
  """The model's parameters as a pure dict, from `config.init_from` when set."""
  if config.init_from:
    model = load_matching(config.init_from, model, ignore=('gru_init',))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# ---- the step -------------------------------------------------------------------------------------

def codebook_stats(codes: list, sizes: list[int]) -> dict:
  """Per-scale perplexity (exp entropy of code frequencies) and share of codes used, over a batch."""
  stats = {}
  for s, (c, k) in enumerate(zip(codes, sizes)):
    counts = jnp.zeros(k, jnp.float32).at[c.reshape(-1)].add(1.0)
    p = counts / counts.sum()
    stats[f'perplexity_s{s}'] = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0)))
    stats[f'usage_s{s}'] = jnp.mean(counts > 0)
  return stats


class Steps:
  """The jitted train and eval steps of one model, trainer and optimizer."""

  def __init__(self, config, model: models.VQVCPlus, trainer: trainers.Trainer, mesh):
    self.graphdef, _, self.rest = nnx.split(model, nnx.Param, ...)
    self.trainer = trainer
    self.tx = make_optimizer(config)
    self.latent_weight = config.latent_loss_weight
    self.dtype = jnp.dtype(config.compute_dtype)
    self.codebook_sizes = [q.num_codes for q in model.quantize]
    self.traces = 0  # how many times the train step was traced (= compiled)
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.train_step = jax.jit(self._train_step, in_shardings=(replicated, batch),
                              out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_step = jax.jit(self._eval_step, in_shardings=(replicated, batch, replicated),
                             out_shardings=replicated)
    self.sample = jax.jit(self._sample)

  def model(self, params):
    if self.dtype != jnp.float32:
      params = jax.tree.map(lambda p: p.astype(self.dtype), params)
    return nnx.merge(self.graphdef, params, self.rest)

  def loss(self, params, inputs, rng):
    inputs = {k: v.astype(self.dtype) for k, v in inputs.items()}
    return self.trainer.loss(self.model(params), inputs, rng, self.latent_weight)

  def _train_step(self, state, inputs):
    self.traces += 1  # runs at trace time only
    rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], inputs, rng)
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing: the state stays the last good one and the loop stops.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(state, params=keep(params, state['params']),
                     opt_state=keep(opt_state, state['opt_state']),
                     step=state['step'] + finite.astype(state['step'].dtype))
    metrics = dict(loss=loss, recon_loss=aux['recon_loss'], latent_loss=aux['latent_loss'],
                   grad_norm=grad_norm, finite=finite,
                   **codebook_stats(aux['codes'], self.codebook_sizes))
    return new_state, metrics

  def _eval_step(self, params, inputs, rng):
    loss, aux = self.loss(params, inputs, rng)
    return dict(loss=loss, recon_loss=aux['recon_loss'], latent_loss=aux['latent_loss'],
                **codebook_stats(aux['codes'], self.codebook_sizes))

  def _sample(self, params, source, target, rng):
    """Reconstruction of `source` and its conversion to `target`'s voice (normalised space)."""
    model = self.model(params)
    recon_key, convert_key = jax.random.split(rng)
    source, target = self.trainer.normalize(source), self.trainer.normalize(target)
    recon, _ = model.reconstruct(source, rng=recon_key)  # the rhythm model: rhythm from source too
    return recon.astype(jnp.float32), model.convert(source, target, rng=convert_key).astype(
        jnp.float32)


def initial_state(config, params: dict, tx: optax.GradientTransformation) -> dict:
  return dict(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
              rng=jax.random.key_data(jax.random.key(config.seed)))


def place(tree, mesh):
  """Replicates a tree of host values onto every device of the mesh (works across processes)."""
  target = sharding.replicated(mesh)
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])
  return jax.tree.map(put, tree)


def abstract_like(tree, mesh):
  target = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target), tree)


# ---- evaluation -----------------------------------------------------------------------------------

def eval_batches(config, data: Data, trainer: trainers.Trainer, local_batch: int) -> list[dict]:
  """A fixed list of test batches (this process's shard), augmented with a fixed seed."""
  dataset = input_pipeline.make_dataset(
      data.test_dir, batch_size=local_batch, crop_frames=config.data.crop_frames,
      seed=config.seed + 1, shard_index=jax.process_index(), shard_count=jax.process_count())
  rng = np.random.default_rng([config.seed, 1])
  return [trainer.augment(dataset[i]['mel'], rng) for i in range(config.eval_batches)]


def sample_pair(test_dir: str, frames: int) -> tuple[np.ndarray, np.ndarray, str, str]:
  """A fixed (source, target) pair of test utterances from two speakers, the same on every process."""
  files = input_pipeline.list_features(test_dir)
  source = files[0]
  target = next((f for f in files if corpus.speaker_of(f) != corpus.speaker_of(source)), files[-1])
  load = lambda f: input_pipeline.random_crop(np.load(f)[:, :frames], frames,
                                              np.random.default_rng(0))[None]
  return load(source), load(target), os.path.basename(source), os.path.basename(target)


def mean_metrics(eval_step, batches: list[dict], mesh) -> dict:
  """The mean over fixed local batches of `eval_step(index, global_batch)`'s metrics."""
  totals: dict[str, float] = {}
  for i, local in enumerate(batches):
    for k, v in jax.device_get(eval_step(i, sharding.global_batch(mesh, local))).items():
      totals[k] = totals.get(k, 0.0) + float(v) / len(batches)
  return totals


def evaluate(steps: Steps, state: dict, batches: list[dict], mesh, rng) -> dict:
  """Mean test metrics over the fixed batches."""
  return mean_metrics(
      lambda i, batch: steps.eval_step(state['params'], batch, jax.random.fold_in(rng, i)),
      batches, mesh)


def write_samples(writer: summaries.Writer, steps: Steps, state: dict, pair, vocoder, step: int):
  source, target, source_name, target_name = pair
  mesh = jax.tree.leaves(state['params'])[0].sharding.mesh
  recon, converted = steps.sample(state['params'], place(source, mesh), place(target, mesh),
                                  jax.random.fold_in(jax.random.key(0), step))
  denorm = steps.trainer.denormalize
  recon, converted = np.asarray(recon[0]), np.asarray(converted[0])
  mels = dict(source=source[0], target=target[0], reconstruction=denorm(recon),
              conversion=denorm(converted))
  if jax.process_index() != 0:
    return
  waves = vocoder(np.stack(list(mels.values())))
  for (name, mel), wave in zip(mels.items(), waves):
    writer.mel(step, f'mel/{name}', mel)
    writer.audio(step, f'audio/{name}', wave, vocoder.sample_rate)
  logging.info('step %d: wrote samples (source %s, target %s)', step, source_name, target_name)


# ---- the loop -------------------------------------------------------------------------------------

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


class VoiceConversionTask:
  """Training a VQVC+ model: what the loop asks of a task (see `train_and_evaluate`).

  A task owns its data, its initial state, the jitted train step, the host-side preparation of each
  batch, evaluation and samples; the loop owns order, checkpoints, logging and stopping.
  """

  log_keys = ('loss', 'recon_loss', 'latent_loss', 'grad_norm')

  def __init__(self, config, workdir: str, mesh):
    self.config, self.mesh = config, mesh
    self.data = resolve_data(config, workdir)
    self.trainer = trainers.get(config.trainer, self.data.stats_file)
    self.local_batch = sharding.local_batch_size(config.batch_size)
    self.model = build_model(config)
    self.steps = Steps(config, self.model, self.trainer, mesh)
    self.train_step = self.steps.train_step
    self.test_batches = eval_batches(config, self.data, self.trainer, self.local_batch)
    self.pair = sample_pair(self.data.test_dir, config.data.crop_frames)
    self.vocoder = vocoders.get(config.vocoder, feature_params(config))

  @property
  def traces(self) -> int:
    return self.steps.traces

  def initial_state(self) -> dict:
    return initial_state(self.config, init_params(self.config, self.model), self.steps.tx)

  def dataset(self):
    return input_pipeline.make_dataset(
        self.data.train_dir, batch_size=self.local_batch, crop_frames=self.config.data.crop_frames,
        seed=self.config.seed, shard_index=jax.process_index(), shard_count=jax.process_count())

  def inputs(self, batch: dict, step: int) -> dict:
    return self.trainer.augment(batch['mel'], np.random.default_rng([self.config.seed, step]))

  def prepare_workdir(self, workdir: str) -> None:
    """The mean/std trainer's statistics go into the workdir, so a restore needs nothing else."""
    if self.config.trainer == 'mean_std':
      corpus.atomic_write(os.path.join(workdir, corpus.STATS_FILE),
                          lambda tmp: shutil.copyfile(self.data.stats_file, tmp))

  def evaluate(self, state: dict) -> dict:
    return evaluate(self.steps, state, self.test_batches, self.mesh,
                    jax.random.key(self.config.seed + 2))

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    write_samples(writer, self.steps, state, self.pair, self.vocoder, step)


def make_task(config, workdir: str, mesh):
  """The task `config.task` names: voice conversion (the default) or a vocoder."""
  task = config.get('task', 'voice_conversion')
  if task == 'voice_conversion':
    return VoiceConversionTask(config, workdir, mesh)
  if task == 'vocoder':
    from skipvqvc_jax.vocoders import training  # pylint: disable=import-outside-toplevel
    return training.VocoderTask(config, workdir, mesh)
  raise ValueError(f'config.task={task!r}: use voice_conversion or vocoder')


def _save_config(config, workdir: str, data: Data) -> None:
  """config.json with the resolved data folders: what a restore reads instead of flags."""
  resolved = config.to_dict()
  resolved['data'].update(train_dir=data.train_dir, test_dir=data.test_dir,
                          stats_file=data.stats_file)
  corpus.save_json(os.path.join(workdir, 'config.json'), resolved)


def _metrics_line(metrics: dict, keys) -> str:
  return ' '.join(f'{k} {metrics[k]:.4f}' for k in keys if k in metrics)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns a summary.

  The one training loop of the project, for every task (`make_task`): data order, the train step,
  evaluation and samples, checkpoints with the data iterator's position, preemption and divergence.
  """
  mesh = sharding.make_mesh()
  task = make_task(config, workdir, mesh)
  ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints)

  fresh = task.initial_state()
  latest = ckpt.latest_step()
  if latest is not None and not config.resume:
    if jax.process_index() == 0:
      aside = f'{ckpt.directory}.old-{time.strftime("%Y%m%d-%H%M%S")}'
      logging.warning('resume=False: moving the checkpoints up to step %d to %s', latest, aside)
      ckpt.close()
      os.rename(ckpt.directory, aside)
    _sync('move-checkpoints')
    ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints)
    latest = None
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _save_config(config, workdir, task.data)
    task.prepare_workdir(workdir)

  iterator = input_pipeline.make_iterator(task.dataset(), prefetch=config.data.prefetch)
  if latest is not None:
    state, data_state = ckpt.restore(abstract_like(fresh, mesh))
    iterator.set_state(data_state)
    logging.info('resumed from step %d of %s', latest, ckpt.directory)
  else:
    state = place(fresh, mesh)
  del fresh

  writer = summaries.Writer(workdir)
  step = int(jax.device_get(state['step']))
  summary: dict[str, Any] = dict(start_step=step, evals={}, status='finished')

  def run_eval(step):
    metrics = task.evaluate(state)
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
    corpus.save_json(os.path.join(workdir, 'train_summary.json'),
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


# ---- restoring for evaluation and conversion ------------------------------------------------------

def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise TrainingError(f'{workdir} has no config.json: not a training workdir')
  return ml_collections.ConfigDict(corpus.load_json(path))


def latest_step(workdir: str) -> int | None:
  config = read_workdir_config(workdir)
  ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints, async_save=False)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def restore_state(workdir: str, config, fresh: dict, step: int | None = None) -> dict:
  """The train state of a workdir at `step` (default: the latest), shaped like `fresh`, on this host."""
  ckpt = checkpoints.TrainCheckpoints(workdir, config.keep_checkpoints, async_save=False)
  try:
    state, _ = ckpt.restore(abstract_like(fresh, sharding.make_mesh()), step)
  finally:
    ckpt.close()
  return jax.device_get(state)


def restore_model(workdir: str, step: int | None = None) -> models.VQVCPlus:
  """The model of a training workdir at `step` (default: the latest checkpoint), on this host."""
  config = read_workdir_config(workdir)
  if config.get('task') == 'vocoder':
    raise TrainingError(f'{workdir} trains a vocoder, not a voice-conversion model: pass it as '
                        f'--vocoder={workdir} and --workdir a voice-conversion run')
  model = build_model(config)
  params = nnx.state(model, nnx.Param)
  fresh = initial_state(config, nnx.to_pure_dict(params), make_optimizer(config))
  nnx.replace_by_pure_dict(params, restore_state(workdir, config, fresh, step)['params'])
  nnx.update(model, params)
  return model


def load_any(source: str):
  """A model from a model directory, or the latest checkpoint of a voice-conversion or vocoder
  training workdir."""
  if os.path.isfile(os.path.join(source, 'model.json')):
    return checkpoints.load_model(source)
  if not os.path.isfile(os.path.join(source, 'config.json')):
    raise FileNotFoundError(f'{source}: not a model directory or a training workdir')
  if read_workdir_config(source).get('task') == 'vocoder':
    from skipvqvc_jax.vocoders import training  # pylint: disable=import-outside-toplevel
    return training.restore_generator(source)
  return restore_model(source)


def load_matching(source: str, like, ignore: tuple = ()):
  """`load_any(source)`, refused unless it is built like the model `like` (but for `ignore`d
  settings): what `config.init_from` starts from."""
  loaded = load_any(source)
  spec, ours = checkpoints.model_spec(loaded), checkpoints.model_spec(like)
  if {k: v for k, v in spec.items() if k not in ignore} != {
      k: v for k, v in ours.items() if k not in ignore}:
    raise TrainingError(f'init_from {source} holds {spec}, not the configured {ours}')
  return loaded
