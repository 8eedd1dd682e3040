"""Training a VQVC+ model: the voice-conversion task of the loop (`tasks.base.Task`).

A train step is a pure function of (state, batch) -> (state, metrics), jitted once with the batch sharded
over the `data` mesh axis and the state replicated. The state is a plain dict of arrays: parameters (as
pure dicts of nnx.Param values), optimizer state, step and the base RNG key; the model's structure is
closed over. Per-step randomness is `fold_in(rng, step)`, so a resumed run draws the same noise as an
uninterrupted one. The trainer (`trainers.py`) is the few lines in which the original's scripts differ.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from skipvqvc_jax import models, vocoders
from skipvqvc_jax.core import storage
from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.core.fileio import atomic_write
from skipvqvc_jax.data import audio, corpus, f0, feature_files
from skipvqvc_jax.store import checkpoints, summaries
from skipvqvc_jax.training import input_pipeline, run_data, sharding, trainers
from skipvqvc_jax.training.tasks import began, codebooks
from skipvqvc_jax.training.tasks.base import jit_train_step, keep_if_finite, laid_out, learning_rate

# Folded into a step's key for the codebook upkeep's draws (the step's own key trains the model).
_UPKEEP_STREAM = 1


def model_info(config) -> checkpoints.ModelInfo:
  """The voice-conversion model a config trains; its parameters are the train state's `params`."""
  m = config.model
  spec = dict(
    name=m.name,
    channel=m.channel,
    n_embed=m.n_embed,
    in_channel=config.features.n_mels,
    gru_init=m.gru_init,
  )
  # The levers off in the original are absent from the spec when off, as in every model before them.
  spec.update({k: m[k] for k in models.BUILD_OPTIONS if m.get(k)})
  return checkpoints.ModelInfo(spec, ('params',))


def build_model(config):
  return models.build(**model_info(config).spec, seed=config.seed)


def default_workdir(config) -> str:
  model = config.model
  return os.path.join('runs', f'{model.name}_n{model.n_embed}_ch{model.channel}_{config.trainer}')


def next_step(program: str, workdir: str) -> str:
  return (
    f'next: evaluate with {program} --mode=eval --model={workdir} ; convert with {program} '
    f'--mode=convert --model={workdir} --source=SOURCE.wav --target=TARGET.wav '
    f'--output=OUT.wav'
  )


def check_config(config) -> None:
  """One-line errors for model and data settings that cannot work, before any data is read."""
  model = config.model
  if model.name not in models.names():
    raise ConfigError(
      f'--config.model.name={model.name!r}: valid models: {", ".join(models.names())}'
    )
  if not isinstance(model.channel, int) or model.channel < 4 or model.channel % 4:
    raise ConfigError(
      f'--config.model.channel={model.channel!r}: must be a positive multiple of 4 '
      f'(the GBlocks use 4 groups)'
    )
  if not isinstance(model.n_embed, int) or model.n_embed < 4:
    raise ConfigError(
      f'--config.model.n_embed={model.n_embed!r}: must be a whole number >= 4 (the '
      f'finest scale has n_embed / 4 codes)'
    )
  model_class = models.get_class(model.name)
  for option, names in models.OPTION_MODELS.items():
    if model.get(option) and model.name not in names:
      raise ConfigError(
        f'--config.model.{option}: {model.name} cannot take it; models that can: {", ".join(names)}'
      )
  check_content_resize(config, model_class)
  code_dim = model.get('code_dim', 0)
  if not isinstance(code_dim, int) or code_dim < 0:
    raise ConfigError(
      f'--config.model.code_dim={code_dim!r}: the width codes are matched in, a whole number '
      f"(0: the stage's own width)"
    )
  steps = model.get('predict_steps', 0)
  if not isinstance(steps, int) or not 0 <= steps < config.data.crop_frames // 2:
    raise ConfigError(
      f'--config.model.predict_steps={steps!r}: frames ahead the content predictor guesses, a '
      f'whole number from 0 (none) to under half the finest scale ({config.data.crop_frames // 2})'
    )
  if config.trainer not in trainers.TRAINERS:
    raise ConfigError(
      f'--config.trainer={config.trainer!r}: valid trainers: {", ".join(trainers.TRAINERS)}'
    )
  trainers.TRAINERS[config.trainer].check_model(model_class)
  multiple = model_class.frames_multiple_of()
  crop = config.data.crop_frames
  if not isinstance(crop, int) or crop < multiple or crop % multiple:
    raise ConfigError(
      f'--config.data.crop_frames={crop!r}: {model.name} needs a positive multiple of {multiple}'
    )


def check_content_resize(config, model_class) -> None:
  resize = config.get('content_resize', 0.0)
  if not isinstance(resize, (int, float)) or not 0 <= resize < 1:
    raise ConfigError(
      f'--config.content_resize={resize!r}: must be in [0, 1) (0.15: ratios of 0.85 to 1.15)'
    )
  if resize and (model_class.takes_content_mel or model_class.speaker_free):
    raise ConfigError(
      f'--config.content_resize: {model_class.name} has no speaker terms to take from the '
      f'unchanged mel (rhythm and speaker-free models); set it to 0'
    )


def make_optimizer(config) -> optax.GradientTransformation:
  """The original's Adam with gradient clipping (at the `lr_schedule`'s rate); with `trainable` set
  (e.g. 'dec': fine-tuning the decoder to one voice), only those top-level parameter groups are
  updated (clipped among themselves) and the rest get no update and no optimizer state."""
  rate = learning_rate(config)
  adam = optax.chain(
    optax.clip_by_global_norm(config.grad_clip_norm),
    optax.adam(rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
  )
  adam = laid_out(config, adam)
  trainable = trainable_groups(config)
  if not trainable:
    return adam
  labels = lambda params: {
    group: jax.tree.map(lambda _, g=group: 'train' if g in trainable else 'frozen', tree)
    for group, tree in params.items()
  }
  return optax.multi_transform({'train': adam, 'frozen': optax.set_to_zero()}, labels)


def trainable_groups(config) -> tuple[str, ...]:
  return tuple(name for name in config.get('trainable', '').split(',') if name)


def frozen_groups(config, model_name: str, groups: list[str]) -> set[str]:
  """The parameter groups `config.trainable` leaves as they are (none when it is empty); a group the
  model does not have is refused in one line."""
  trainable = trainable_groups(config)
  unknown = [name for name in trainable if name not in groups]
  if unknown:
    raise ConfigError(
      f'--config.trainable={config.trainable}: {model_name} has no parameter group '
      f'{", ".join(unknown)}; its groups are {", ".join(sorted(groups))}'
    )
  return {g for g in groups if trainable and g not in trainable}


def codebook_stats(codes: list, sizes: list[int]) -> dict:
  """Per-scale perplexity and share of codes used, over a batch (`models.code_statistics`)."""
  stats = {}
  for s, (c, k) in enumerate(zip(codes, sizes)):
    scale = models.code_statistics(c, k)
    stats[f'perplexity_s{s}'], stats[f'usage_s{s}'] = scale['perplexity'], scale['usage']
  return stats


def renormed_params(params: dict, aux: dict) -> dict:
  """`params` with the codebooks a max_norm lookup renormalised during the forward pass (the
  original's nn.Embedding does it in place; the optimizer then updates the renormalised rows)."""
  if 'renormed_codebooks' not in aux:
    return params
  quantize = dict(params['quantize'])
  for s, table in enumerate(aux['renormed_codebooks']):
    old = quantize[s]['embedding']
    quantize[s] = dict(quantize[s], embedding=table.astype(old.dtype))
  return dict(params, quantize=quantize)


class Steps:
  """The jitted train, eval and sample steps of one model, trainer and optimizer."""

  def __init__(self, config, model, trainer: trainers.Normalised, mesh):
    self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
    self.trainer = trainer
    self.frozen = frozen_groups(config, model.name, list(nnx.to_pure_dict(params)))
    self.tx = make_optimizer(config)
    self.latent_weight = config.latent_loss_weight
    self.content_resize = config.get('content_resize', 0.0)
    self.prediction_weight = config.get('content_prediction_weight', 0.0)
    self.dtype = jnp.dtype(config.compute_dtype)
    self.codebook_sizes = [q.num_codes for q in model.quantize]
    self.upkeep = codebooks.Upkeep.of(config, model)
    self.adversary = began.Began(config, model) if trainer.spec.adversary else None
    self.traces = 0  # how many times the train step was traced (= compiled)
    self.train_step = jit_train_step(self.step, mesh)
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.eval_step = jax.jit(
      self._eval_step, in_shardings=(replicated, batch, replicated), out_shardings=replicated
    )
    self.sample = jax.jit(self._sample)

  def model(self, params):
    if self.dtype != jnp.float32:
      params = jax.tree.map(lambda p: p.astype(self.dtype), params)
    return nnx.merge(self.graphdef, params, self.rest)

  def loss(self, params, inputs, rng, train: bool = True):
    # F0 stays float32: a bfloat16 Hz value is off by up to a third of a semitone.
    inputs = {k: v if k == 'f0' else v.astype(self.dtype) for k, v in inputs.items()}
    # The test loss is the plain reconstruction's: no resized content, no prediction term.
    resize, prediction = (self.content_resize, self.prediction_weight) if train else (0.0, 0.0)
    return self.trainer.loss(
      self.model(params), inputs, rng, self.latent_weight, resize, prediction
    )

  def step(self, state, inputs):
    self.traces += 1  # runs at trace time only
    rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], inputs, rng)
    renormed = renormed_params(state['params'], aux)
    updates, opt_state = self.tx.update(grads, state['opt_state'], renormed)
    params = optax.apply_updates(renormed, updates)
    trained, restarted = {}, {}
    if self.upkeep:
      params, trained['codebook'], count = self.upkeep.update(
        params,
        state['codebook'],
        aux['codes'],
        aux['quantizer_in'],
        state['step'],
        jax.random.fold_in(rng, _UPKEEP_STREAM),
      )
      restarted = dict(restarted_codes=count)
    if self.adversary:  # train_ljvae.py: the critic and the decoder's adversarial update
      real = self.trainer.normalize(inputs['mel'].astype(self.dtype))
      params, trained['adversary'], adversarial = self.adversary.update(
        self.model, renormed, params, state['adversary'], aux['codes'], real, rng
      )
      restarted.update(adversarial)
    # Frozen groups stay exactly as they were (a codebook's forward-pass renormalisation included).
    params = {k: state['params'][k] if k in self.frozen else v for k, v in params.items()}
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = keep_if_finite(finite, dict(params=params, opt_state=opt_state, **trained), state)
    metrics = dict(
      loss=loss,
      recon_loss=aux['recon_loss'],
      latent_loss=aux['latent_loss'],
      grad_norm=grad_norm,
      finite=finite,
      **codebook_stats(aux['codes'], self.codebook_sizes),
      **restarted,
      **{k: aux[k] for k in ('prediction_loss',) if k in aux},
    )
    return new_state, metrics

  def _eval_step(self, params, inputs, rng):
    loss, aux = self.loss(params, inputs, rng, train=False)
    return dict(
      loss=loss,
      recon_loss=aux['recon_loss'],
      latent_loss=aux['latent_loss'],
      **codebook_stats(aux['codes'], self.codebook_sizes),
    )

  def _sample(self, params, source, target, rng, source_f0=None):
    """Reconstruction of `source` and its conversion to `target`'s voice (normalised space); for a
    multi-scale model, lists of every scale's output, coarsest first (an F0 model's with the
    source's F0, Hz)."""
    model = self.model(params)
    recon_key, convert_key = jax.random.split(rng)
    source, target = self.trainer.normalize(source), self.trainer.normalize(target)
    contour = None if source_f0 is None else f0.model_contour(source_f0)
    recon, _ = model.reconstruct(source, f0=contour, rng=recon_key)  # rhythm: from source too
    converted = model.convert(source, target, f0=contour, rng=convert_key)
    return jax.tree.map(lambda x: x.astype(jnp.float32), (recon, converted))


def make_state(params: dict, tx: optax.GradientTransformation, seed: int, **parts) -> dict:
  """A train state at step 0: parameters, their optimizer state, the step and the base RNG key (and
  `parts` that are not None: the codebook upkeep's state, the adversary's)."""
  state = dict(
    params=params,
    opt_state=tx.init(params),
    step=jnp.zeros((), jnp.int32),
    rng=jax.random.key_data(jax.random.key(seed)),
  )
  state.update({name: part for name, part in parts.items() if part is not None})
  return state


def sample_pair(test_dir: str, frames: int, with_f0: bool = False) -> tuple:
  """A fixed (source, target) pair of test utterances from two speakers, the same on every process:
  their first crops, names and (with_f0) the source crop's F0 in Hz (1, frames), else None."""
  files = feature_files.list_features(test_dir)
  source = files[0]
  target = next((f for f in files if corpus.speaker_of(f) != corpus.speaker_of(source)), files[-1])
  crop = lambda array: input_pipeline.crop_at(array[:, :frames], frames, 0.0)[None]
  load = lambda f: crop(feature_files.load_features(f))
  source_f0 = crop(feature_files.load_f0(source))[0] if with_f0 else None
  return load(source), load(target), os.path.basename(source), os.path.basename(target), source_f0


class VoiceConversionTask:
  """Training a VQVC+ model with one of the trainers (`trainers.TRAINERS`)."""

  log_keys = ('loss', 'recon_loss', 'latent_loss', 'grad_norm')
  init_ignore = ('gru_init',)  # init_from may come from a model with the other GRU initial state

  check_config = staticmethod(check_config)
  model_info = staticmethod(model_info)
  default_workdir = staticmethod(default_workdir)
  next_step = staticmethod(next_step)

  def __init__(self, config, workdir: str, mesh):
    self.config, self.mesh = config, mesh
    self.data = run_data.resolve_data(config, workdir)
    # A run's statistics are fixed at its start: a resume normalises with the workdir's copy, not
    # with the feature folder's (which preprocessing more audio may have changed since).
    run_stats = storage.join(workdir, corpus.STATS_FILE)
    self.stats_file = run_stats if storage.isfile(run_stats) else self.data.stats_file
    self.trainer = trainers.get(config.trainer, self.stats_file)
    self.local_batch = sharding.local_batch_size(config.batch_size)
    self.model = build_model(config)
    self.model_spec = self.model.spec()
    self.steps = Steps(config, self.model, self.trainer, mesh)
    self.step = self.steps.step
    self.train_step = self.steps.train_step
    self.test_batches = self._test_batches()
    self.pair = sample_pair(self.data.test_dir, config.data.crop_frames, self.trainer.spec.f0)
    self.vocoder = vocoders.get(config.vocoder, audio.FeatureParams.from_dict(config.features))
    self.wrote_inputs = False  # the sample pair's source and target, to TensorBoard

  def _test_batches(self) -> list[dict]:
    """A fixed list of test batches (this process's shard), augmented with a fixed seed."""
    config = self.config
    dataset = input_pipeline.make_dataset(
      self.data.test_dir,
      batch_size=self.local_batch,
      crop_frames=config.data.crop_frames,
      seed=config.seed + 1,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      f0=self.trainer.spec.f0,
    )
    rng = np.random.default_rng([config.seed, 1])
    batches = [dataset[i] for i in range(config.eval_batches)]
    return [self.trainer.augment(b['mel'], rng, b.get('f0')) for b in batches]

  @property
  def traces(self) -> int:
    return self.steps.traces

  def initial_state(self, params: dict | None = None) -> dict:
    """Step 0: `params` (the model's, from init_from) or the model's own initialisation."""
    params = checkpoints.params_of(self.model) if params is None else params
    upkeep = self.steps.upkeep
    if upkeep:
      quantize = params['quantize']
      codebook = upkeep.initial([quantize[s]['embedding'] for s in sorted(quantize)])
    else:
      codebook = None
    adversary = self.steps.adversary.initial(params) if self.steps.adversary else None
    return make_state(
      params, self.steps.tx, self.config.seed, codebook=codebook, adversary=adversary
    )

  def dataset(self):
    return input_pipeline.make_dataset(
      self.data.train_dir,
      batch_size=self.local_batch,
      crop_frames=self.config.data.crop_frames,
      seed=self.config.seed,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      f0=self.trainer.spec.f0,
    )

  def inputs(self, batch: dict, step: int) -> dict:
    rng = np.random.default_rng([self.config.seed, step])
    return self.trainer.augment(batch['mel'], rng, batch.get('f0'))

  def prepare_workdir(self, workdir: str) -> None:
    """The mean/std trainer's statistics go into the workdir, so a restore needs nothing else."""
    run_stats = storage.join(workdir, corpus.STATS_FILE)
    if self.trainer.uses_stats and not storage.isfile(run_stats):
      atomic_write(run_stats, lambda tmp: storage.copy(self.stats_file, tmp))

  def test_metrics(self, state: dict) -> dict:
    """Mean test metrics over the fixed batches."""
    rng = jax.random.key(self.config.seed + 2)
    return sharding.mean_over_batches(
      lambda i, batch: self.steps.eval_step(state['params'], batch, jax.random.fold_in(rng, i)),
      self.test_batches,
      self.mesh,
    )

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    """Mel images and audio of the fixed pair: source, target, reconstruction, conversion."""
    source, target, source_name, target_name, source_f0 = self.pair
    recon, converted = self.steps.sample(
      state['params'],
      sharding.place(source, self.mesh),
      sharding.place(target, self.mesh),
      jax.random.fold_in(jax.random.key(0), step),
      source_f0,
    )
    denorm = lambda outputs: self.trainer.denormalize(np.asarray(outputs[-1][0]))
    mels = dict(reconstruction=denorm(recon), conversion=denorm(converted))
    if jax.process_index() != 0:
      return
    if (
      not self.wrote_inputs
    ):  # the same at every evaluation: once a run (a resume writes them again)
      mels = dict(source=source[0], target=target[0], **mels)
      self.wrote_inputs = True
    waves = self.vocoder(np.stack(list(mels.values())))
    for (name, mel), wave in zip(mels.items(), waves):
      writer.mel(step, f'mel/{name}', mel)
      writer.audio(step, f'audio/{name}', wave, self.vocoder.sample_rate)
    for name, outputs in (('reconstruction', recon), ('conversion', converted)):
      for j, mel in enumerate(outputs if len(outputs) > 1 else []):
        # Every scale of a multi-scale model, in the low bands it is trained on.
        writer.mel(
          step,
          f'mel_scales/{name}_d{j}',
          np.asarray(self.trainer.denormalize_bands(mel[0], source.shape[1])),
        )
    logging.info('step %d: wrote samples (source %s, target %s)', step, source_name, target_name)
