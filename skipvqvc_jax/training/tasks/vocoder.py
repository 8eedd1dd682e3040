"""Training a MelGAN generator on a corpus: the vocoder task of the loop (`tasks.base.Task`).

Data: random segments of the trimmed waveforms behind a preprocessed corpus (`tasks/waveforms.py`
re-reads them once into the workdir, cut by the manifest's trim ranges), and their log-mels computed on
the device from the segment itself with the feature code's framing (`audio.batch_log_mel`), so audio and
frames pair exactly.

One jitted step updates both networks, in MelGAN's order: the discriminators on real audio and the
generator's current output, then the generator against the updated discriminators (feature matching
against the real features of the first pass, as melgan-neurips does). The generator runs forward once
per step: its output's gradient is pulled back through a saved VJP.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from skipvqvc_jax import models, vocoders
from skipvqvc_jax.core.errors import ConfigError
from skipvqvc_jax.data import audio, feature_files
from skipvqvc_jax.models import Discriminators, MelGANGenerator
from skipvqvc_jax.store import checkpoints, summaries
from skipvqvc_jax.training import input_pipeline, run_data, sharding
from skipvqvc_jax.training.tasks.base import jit_train_step, keep_if_finite, laid_out, learning_rate
from skipvqvc_jax.training.tasks.waveforms import WAVE_SCALE, waveform_dir
from skipvqvc_jax.vocoders import griffin_lim


def model_info(config) -> checkpoints.ModelInfo:
  """The generator a config trains (its family's spec); the train state holds it under
  `params/generator`."""
  return checkpoints.ModelInfo(vocoders.generator_spec(config), ('params', 'generator'))


def build_generator(config) -> MelGANGenerator:
  return models.build(**model_info(config).spec, seed=config.seed)


def build_discriminators(config) -> Discriminators:
  d = config.discriminator
  return models.build(
    'discriminators',
    scales=d.scales,
    ndf=d.ndf,
    layers=d.layers,
    downsampling=d.downsampling,
    periods=tuple(d.periods),
    period_channels=tuple(d.period_channels),
    seed=config.seed + 1,
  )


def make_optimizer(config) -> optax.GradientTransformation:
  return laid_out(
    config,
    optax.adam(learning_rate(config), b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
  )


# ---- losses ---------------------------------------------------------------------------------------
# `outputs` are lists over sub-discriminators of lists of activations, the last being the score map.


def discriminator_loss(real: list, fake: list, kind: str):
  if kind == 'hinge':
    terms = [
      jnp.mean(jax.nn.relu(1 - r[-1])) + jnp.mean(jax.nn.relu(1 + f[-1]))
      for r, f in zip(real, fake)
    ]
  else:  # least squares
    terms = [jnp.mean((1 - r[-1]) ** 2) + jnp.mean(f[-1] ** 2) for r, f in zip(real, fake)]
  return sum(terms)


def generator_adversarial_loss(fake: list, kind: str):
  if kind == 'hinge':
    return sum(-jnp.mean(f[-1]) for f in fake)
  return sum(jnp.mean((1 - f[-1]) ** 2) for f in fake)


def feature_loss(real: list, fake: list):
  """Sum over sub-discriminators and their hidden layers of the mean |real - fake| activation."""
  return sum(
    jnp.mean(jnp.abs(r - f)) for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1])
  )


def _split_halves(outputs: list) -> tuple[list, list]:
  """Outputs of the discriminators on [real; fake] -> (outputs on real, outputs on fake).

  Rows are ordered by example (the multi-period folding keeps an example's columns together), so
  the first half of every activation's rows belongs to the real examples."""
  first = [[a[: a.shape[0] // 2] for a in sub] for sub in outputs]
  second = [[a[a.shape[0] // 2 :] for a in sub] for sub in outputs]
  return first, second


class VocoderSteps:
  """The jitted train, eval and generation steps of one generator, its discriminators and optimizer."""

  def __init__(self, config, generator: MelGANGenerator, discriminators: Discriminators, mesh):
    self.g_graph, _ = nnx.split(generator, nnx.Param)
    self.d_graph, _ = nnx.split(discriminators, nnx.Param)
    self.features = audio.FeatureParams.from_dict(config.features)
    self.tx = make_optimizer(config)
    self.kind = config.adversarial_loss  # hinge or least_squares (check_config)
    self.feature_weight, self.mel_weight = config.feature_loss_weight, config.mel_loss_weight
    self.traces = 0
    self.train_step = jit_train_step(self.step, mesh)
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.eval_step = jax.jit(
      self._eval_step, in_shardings=(replicated, batch), out_shardings=replicated
    )
    self.generate = jax.jit(self._generate)

  def _generate(self, generator_params, mel):
    return nnx.merge(self.g_graph, generator_params)(mel)

  def _discriminate(self, discriminator_params, wave):
    return nnx.merge(self.d_graph, discriminator_params)(wave)

  def _mel(self, wave, eps: float = 0.0):
    return audio.batch_log_mel(wave, self.features, eps)

  def step(self, state, batch):
    self.traces += 1  # runs at trace time only
    real = batch['audio'][:, 0, :] / WAVE_SCALE
    mel = self._mel(real)
    g_params, d_params = state['params']['generator'], state['params']['discriminator']
    fake, pull_back = jax.vjp(lambda p: self._generate(p, mel), g_params)

    def d_loss_fn(d_params):
      outputs = self._discriminate(d_params, jnp.concatenate([real, jax.lax.stop_gradient(fake)]))
      on_real, on_fake = _split_halves(outputs)
      return discriminator_loss(on_real, on_fake, self.kind), (on_real, on_fake)

    (d_loss, (on_real, on_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    d_updates, d_opt = self.tx.update(d_grads, state['opt_state']['discriminator'], d_params)
    new_d_params = optax.apply_updates(d_params, d_updates)
    real_features = jax.lax.stop_gradient(on_real)

    def g_loss_fn(fake):
      outputs = self._discriminate(new_d_params, fake)
      adversarial = generator_adversarial_loss(outputs, self.kind)
      features = feature_loss(real_features, outputs)
      mel_l1 = jnp.mean(jnp.abs(self._mel(fake, eps=1e-9) - mel))
      total = adversarial + self.feature_weight * features + self.mel_weight * mel_l1
      return total, dict(adversarial_loss=adversarial, feature_loss=features, mel_l1=mel_l1)

    (g_loss, aux), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = pull_back(fake_grad)
    g_updates, g_opt = self.tx.update(g_grads, state['opt_state']['generator'], g_params)
    new_g_params = optax.apply_updates(g_params, g_updates)

    g_norm, d_norm = optax.tree.norm(g_grads), optax.tree.norm(d_grads)
    finite = (
      jnp.isfinite(g_loss) & jnp.isfinite(d_loss) & jnp.isfinite(g_norm) & jnp.isfinite(d_norm)
    )
    new_state = keep_if_finite(
      finite,
      dict(
        params=dict(generator=new_g_params, discriminator=new_d_params),
        opt_state=dict(generator=g_opt, discriminator=d_opt),
      ),
      state,
    )
    metrics = dict(
      loss=g_loss,
      d_loss=d_loss,
      g_grad_norm=g_norm,
      d_grad_norm=d_norm,
      d_real=sum(jnp.mean(o[-1]) for o in on_real) / len(on_real),
      d_fake=sum(jnp.mean(o[-1]) for o in on_fake) / len(on_fake),
      finite=finite,
      **aux,
    )
    return new_state, metrics

  def _eval_step(self, params, batch):
    real = batch['audio'][:, 0, :] / WAVE_SCALE
    mel = self._mel(real)
    fake = self._generate(params['generator'], mel)
    spectrum = lambda y: jnp.abs(audio.stft(y, self.features))
    real_spec, fake_spec = spectrum(real), spectrum(fake)
    return dict(
      mel_l1=jnp.mean(jnp.abs(self._mel(fake) - mel)),
      spectral_convergence=jnp.linalg.norm(real_spec - fake_spec) / jnp.linalg.norm(real_spec),
    )


def make_state(g_params: dict, d_params: dict, tx: optax.GradientTransformation) -> dict:
  """A train state at step 0: both networks' parameters and optimizer states, and the step."""
  return dict(
    params=dict(generator=g_params, discriminator=d_params),
    opt_state=dict(generator=tx.init(g_params), discriminator=tx.init(d_params)),
    step=jnp.zeros((), jnp.int32),
  )


def default_workdir(config) -> str:
  style = 'hifigan_style' if config.discriminator.periods else 'melgan'
  return os.path.join('runs', f'vocoder_{style}_ngf{config.generator.ngf}')


def next_step(program: str, workdir: str) -> str:
  return (
    f'next: convert through this vocoder with {program} --mode=convert --model=VC_RUN '
    f'--source=SOURCE.wav --target=TARGET.wav --output=OUT.wav --vocoder={workdir}'
  )


def check_config(config) -> None:
  """One-line errors for vocoder settings that cannot work, before any data is read."""
  if config.adversarial_loss not in ('hinge', 'least_squares'):
    raise ConfigError(
      f'--config.adversarial_loss={config.adversarial_loss!r}: use hinge or least_squares'
    )
  family = vocoders.family_of(config)
  for field in (*(f'generator.{f}' for f in family.spec_fields), 'data.segment_frames'):
    group, name = field.split('.')
    value = config[group][name]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'--config.{field}={value!r}: must be a whole number >= 1')
  if config.discriminator.ndf % 4 or config.discriminator.ndf < 4:
    raise ConfigError(
      f'--config.discriminator.ndf={config.discriminator.ndf!r}: must be a '
      f'multiple of 4 (its grouped convolutions)'
    )


class VocoderTask:
  """Training a MelGAN generator against the configured discriminators."""

  log_keys = (
    'loss',
    'd_loss',
    'adversarial_loss',
    'feature_loss',
    'mel_l1',
    'spectral_convergence',
  )
  init_ignore = ()  # init_from must be a generator of exactly the configured size
  check_config = staticmethod(check_config)
  model_info = staticmethod(model_info)
  default_workdir = staticmethod(default_workdir)
  next_step = staticmethod(next_step)

  def __init__(self, config, workdir: str, mesh):
    self.config, self.mesh = config, mesh
    self.data = run_data.resolve_data(config, workdir)
    self.features = audio.FeatureParams.from_dict(config.features)
    self.train_waves = waveform_dir(self.data.train_dir, workdir, self.features)
    self.test_waves = waveform_dir(self.data.test_dir, workdir, self.features)
    self.local_batch = sharding.local_batch_size(config.batch_size)
    self.segment = config.data.segment_frames * self.features.hop_length
    self.generator = build_generator(config)
    self.model_spec = self.generator.spec()
    self.discriminators = build_discriminators(config)
    self.steps = VocoderSteps(config, self.generator, self.discriminators, mesh)
    self.step = self.steps.step
    self.train_step = self.steps.train_step
    test = input_pipeline.make_dataset(
      self.test_waves,
      batch_size=self.local_batch,
      crop_frames=self.segment,
      seed=config.seed + 1,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      key='audio',
    )
    self.test_batches = [dict(audio=test[i]['audio']) for i in range(config.eval_batches)]
    self.sample = self._sample_utterance()
    self.sample_mel = audio.log_mel(self.sample, self.features)
    self.sample_griffin_lim = None  # the same at every evaluation: made once, at the first

  @property
  def traces(self) -> int:
    return self.steps.traces

  def initial_state(self, params: dict | None = None) -> dict:
    """Step 0: the generator's `params` (from init_from) or its own initialisation; fresh
    discriminators. The step draws no randomness, so the state holds no RNG key."""
    g_params = checkpoints.params_of(self.generator) if params is None else params
    return make_state(g_params, checkpoints.params_of(self.discriminators), self.steps.tx)

  def dataset(self):
    return input_pipeline.make_dataset(
      self.train_waves,
      batch_size=self.local_batch,
      crop_frames=self.segment,
      seed=self.config.seed,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
      key='audio',
    )

  def inputs(self, batch: dict, step: int) -> dict:
    del step
    return dict(audio=batch['audio'])

  def prepare_workdir(self, workdir: str) -> None:
    del workdir

  def test_metrics(self, state: dict) -> dict:
    return sharding.mean_over_batches(
      lambda _, batch: self.steps.eval_step(state['params'], batch), self.test_batches, self.mesh
    )

  def _sample_utterance(self) -> np.ndarray:
    """The first `sample_seconds` of the first test utterance, whole frames, float32."""
    files = feature_files.list_features(self.test_waves)
    hop = self.features.hop_length
    samples = int(self.config.sample_seconds * self.features.sample_rate) // hop * hop
    wave = feature_files.load_features(files[0])[0, :samples].astype(np.float32) / WAVE_SCALE
    return wave[: len(wave) // hop * hop]

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    generated = np.asarray(
      self.steps.generate(
        state['params']['generator'], sharding.place(self.sample_mel[None], self.mesh)
      )
    )[0]
    if jax.process_index() != 0:
      return
    if self.sample_griffin_lim is None:
      self.sample_griffin_lim = griffin_lim.GriffinLim(self.features)(self.sample_mel)
      # The same at every evaluation: written once a run (a resume writes them again).
      writer.audio(step, 'audio/real', self.sample, self.features.sample_rate)
      writer.audio(step, 'audio/griffin_lim', self.sample_griffin_lim, self.features.sample_rate)
      writer.mel(step, 'mel/real', self.sample_mel)
    writer.audio(step, 'audio/generated', generated, self.features.sample_rate)
    writer.mel(step, 'mel/generated', audio.log_mel(generated, self.features))
