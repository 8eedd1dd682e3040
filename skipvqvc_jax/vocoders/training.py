"""Training a MelGAN generator on a corpus: the vocoder task of `train.train_and_evaluate`.

Data: random segments of the trimmed waveforms behind a preprocessed corpus (`corpus.cache_waveforms`
re-reads them once into the workdir, cut by the manifest's trim ranges), and their log-mels computed on
the device from the segment itself with the feature code's framing, so audio and frames pair exactly.

One jitted step updates both networks, in MelGAN's order: the discriminators on real audio and the
generator's current output, then the generator against the updated discriminators (feature matching
against the real features of the first pass, as melgan-neurips does). The generator runs forward once
per step: its output's gradient is pulled back through a saved VJP.
"""
from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from skipvqvc_jax import audio, corpus, input_pipeline, sharding, summaries, train
from skipvqvc_jax.vocoders import griffin_lim
from skipvqvc_jax.vocoders.discriminator import Discriminators
from skipvqvc_jax.vocoders.melgan import MelGANGenerator


def build_generator(config) -> MelGANGenerator:
  return MelGANGenerator(config.features.n_mels, config.generator.ngf,
                         config.generator.residual_layers, seed=config.seed)


def build_discriminators(config) -> Discriminators:
  d = config.discriminator
  return Discriminators(scales=d.scales, ndf=d.ndf, layers=d.layers, downsampling=d.downsampling,
                        periods=tuple(d.periods), period_channels=tuple(d.period_channels),
                        seed=config.seed + 1)


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


# ---- losses ---------------------------------------------------------------------------------------
# `outputs` are lists over sub-discriminators of lists of activations, the last being the score map.

def discriminator_loss(real: list, fake: list, kind: str):
  if kind == 'hinge':
    terms = [jnp.mean(jax.nn.relu(1 - r[-1])) + jnp.mean(jax.nn.relu(1 + f[-1]))
             for r, f in zip(real, fake)]
  else:  # least squares
    terms = [jnp.mean((1 - r[-1])**2) + jnp.mean(f[-1]**2) for r, f in zip(real, fake)]
  return sum(terms)


def generator_adversarial_loss(fake: list, kind: str):
  if kind == 'hinge':
    return sum(-jnp.mean(f[-1]) for f in fake)
  return sum(jnp.mean((1 - f[-1])**2) for f in fake)


def feature_loss(real: list, fake: list):
  """Sum over sub-discriminators and their hidden layers of the mean |real - fake| activation."""
  return sum(jnp.mean(jnp.abs(r - f)) for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1]))


def _split_halves(outputs: list) -> tuple[list, list]:
  """Outputs of the discriminators on [real; fake] -> (outputs on real, outputs on fake).

  Rows are ordered by example (the multi-period folding keeps an example's columns together), so
  the first half of every activation's rows belongs to the real examples."""
  first = [[a[:a.shape[0] // 2] for a in sub] for sub in outputs]
  second = [[a[a.shape[0] // 2:] for a in sub] for sub in outputs]
  return first, second


class VocoderSteps:
  """The jitted train, eval and generation steps of one generator, its discriminators and optimizer."""

  def __init__(self, config, generator: MelGANGenerator, discriminators: Discriminators, mesh):
    self.g_graph, _ = nnx.split(generator, nnx.Param)
    self.d_graph, _ = nnx.split(discriminators, nnx.Param)
    self.features = train.feature_params(config)
    self.tx = make_optimizer(config)
    self.kind = config.adversarial_loss
    if self.kind not in ('hinge', 'least_squares'):
      raise ValueError(f'adversarial_loss={self.kind!r}: use hinge or least_squares')
    self.feature_weight, self.mel_weight = config.feature_loss_weight, config.mel_loss_weight
    self.traces = 0
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.train_step = jax.jit(self._train_step, in_shardings=(replicated, batch),
                              out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_step = jax.jit(self._eval_step, in_shardings=(replicated, batch),
                             out_shardings=replicated)
    self.generate = jax.jit(self._generate)

  def _generate(self, generator_params, mel):
    return nnx.merge(self.g_graph, generator_params)(mel)

  def _discriminate(self, discriminator_params, wave):
    return nnx.merge(self.d_graph, discriminator_params)(wave)

  def _mel(self, wave, eps: float = 0.0):
    return griffin_lim.log_mel(wave, self.features, eps)

  def _train_step(self, state, batch):
    self.traces += 1  # runs at trace time only
    real = batch['audio'][:, 0, :] / corpus.WAVE_SCALE
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
    g_grads, = pull_back(fake_grad)
    g_updates, g_opt = self.tx.update(g_grads, state['opt_state']['generator'], g_params)
    new_g_params = optax.apply_updates(g_params, g_updates)

    g_norm, d_norm = optax.tree.norm(g_grads), optax.tree.norm(d_grads)
    finite = (jnp.isfinite(g_loss) & jnp.isfinite(d_loss) & jnp.isfinite(g_norm)
              & jnp.isfinite(d_norm))
    # A non-finite step changes nothing: the state stays the last good one and the loop stops.
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(
        state, params=keep(dict(generator=new_g_params, discriminator=new_d_params),
                           state['params']),
        opt_state=keep(dict(generator=g_opt, discriminator=d_opt), state['opt_state']),
        step=state['step'] + finite.astype(state['step'].dtype))
    metrics = dict(loss=g_loss, d_loss=d_loss, g_grad_norm=g_norm, d_grad_norm=d_norm,
                   d_real=sum(jnp.mean(o[-1]) for o in on_real) / len(on_real),
                   d_fake=sum(jnp.mean(o[-1]) for o in on_fake) / len(on_fake),
                   finite=finite, **aux)
    return new_state, metrics

  def _eval_step(self, params, batch):
    real = batch['audio'][:, 0, :] / corpus.WAVE_SCALE
    mel = self._mel(real)
    fake = self._generate(params['generator'], mel)
    spectrum = lambda y: jnp.abs(griffin_lim.stft(y, self.features))
    real_spec, fake_spec = spectrum(real), spectrum(fake)
    return dict(mel_l1=jnp.mean(jnp.abs(self._mel(fake) - mel)),
                spectral_convergence=jnp.linalg.norm(real_spec - fake_spec)
                / jnp.linalg.norm(real_spec))


def initial_state(g_params: dict, d_params: dict, tx) -> dict:
  """Both networks' parameters and optimizer states, and the step (the step draws no randomness)."""
  return dict(params=dict(generator=g_params, discriminator=d_params),
              opt_state=dict(generator=tx.init(g_params), discriminator=tx.init(d_params)),
              step=jnp.zeros((), jnp.int32))


def waveform_dir(features_dir: str, workdir: str, params: audio.FeatureParams) -> str:
  """The cached trimmed waveforms behind `features_dir`, made on first use (process 0)."""
  root = corpus.manifest_root(features_dir)
  if root is None:
    raise corpus.CorpusError(f'{features_dir} has no manifest.json: a vocoder trains on the audio '
                             f'a preprocessed corpus names; point data.train_dir at the audio or at '
                             f'the output of preprocess.py')
  tag = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:10]
  out = os.path.join(workdir, 'waveforms', tag,
                     os.path.relpath(os.path.abspath(features_dir), os.path.abspath(root)))
  if jax.process_index() == 0:
    corpus.cache_waveforms(features_dir, out, params)
  train._sync('waveforms')  # pylint: disable=protected-access
  return out


class VocoderTask:
  """Training a vocoder: what the loop asks of a task (see `train.VoiceConversionTask`)."""

  log_keys = ('loss', 'd_loss', 'adversarial_loss', 'feature_loss', 'mel_l1',
              'spectral_convergence')

  def __init__(self, config, workdir: str, mesh):
    self.config, self.mesh = config, mesh
    self.data = train.resolve_data(config, workdir)
    self.features = train.feature_params(config)
    self.train_waves = waveform_dir(self.data.train_dir, workdir, self.features)
    self.test_waves = waveform_dir(self.data.test_dir, workdir, self.features)
    self.local_batch = sharding.local_batch_size(config.batch_size)
    self.segment = config.data.segment_frames * self.features.hop_length
    self.generator = build_generator(config)
    self.discriminators = build_discriminators(config)
    self.steps = VocoderSteps(config, self.generator, self.discriminators, mesh)
    self.train_step = self.steps.train_step
    test = input_pipeline.make_dataset(
        self.test_waves, batch_size=self.local_batch, crop_frames=self.segment, seed=config.seed + 1,
        shard_index=jax.process_index(), shard_count=jax.process_count(), key='audio')
    self.test_batches = [dict(audio=test[i]['audio']) for i in range(config.eval_batches)]
    self.sample = self._sample_utterance()
    self.sample_mel = audio.log_mel(self.sample, self.features)
    self.sample_griffin_lim = None  # the same at every evaluation: made once, at the first

  @property
  def traces(self) -> int:
    return self.steps.traces

  def initial_state(self) -> dict:
    generator = self.generator
    if self.config.init_from:
      generator = train.load_matching(self.config.init_from, generator)
    return initial_state(nnx.to_pure_dict(nnx.state(generator, nnx.Param)),
                         nnx.to_pure_dict(nnx.state(self.discriminators, nnx.Param)), self.steps.tx)

  def dataset(self):
    return input_pipeline.make_dataset(
        self.train_waves, batch_size=self.local_batch, crop_frames=self.segment,
        seed=self.config.seed, shard_index=jax.process_index(),
        shard_count=jax.process_count(), key='audio')

  def inputs(self, batch: dict, step: int) -> dict:
    del step
    return dict(audio=batch['audio'])

  def prepare_workdir(self, workdir: str) -> None:
    del workdir

  def evaluate(self, state: dict) -> dict:
    return train.mean_metrics(lambda _, batch: self.steps.eval_step(state['params'], batch),
                              self.test_batches, self.mesh)

  def _sample_utterance(self) -> np.ndarray:
    """The first `sample_seconds` of the first test utterance, whole frames, float32."""
    files = input_pipeline.list_features(self.test_waves)
    hop = self.features.hop_length
    samples = int(self.config.sample_seconds * self.features.sample_rate) // hop * hop
    wave = np.load(files[0])[0, :samples].astype(np.float32) / corpus.WAVE_SCALE
    return wave[:len(wave) // hop * hop]

  def write_samples(self, writer: summaries.Writer, state: dict, step: int) -> None:
    generated = np.asarray(self.steps.generate(state['params']['generator'],
                                               train.place(self.sample_mel[None], self.mesh)))[0]
    if jax.process_index() != 0:
      return
    if self.sample_griffin_lim is None:
      self.sample_griffin_lim = griffin_lim.GriffinLim(self.features)(self.sample_mel)
    sr = self.features.sample_rate
    writer.audio(step, 'audio/real', self.sample, sr)
    writer.audio(step, 'audio/generated', generated, sr)
    writer.audio(step, 'audio/griffin_lim', self.sample_griffin_lim, sr)
    writer.mel(step, 'mel/real', self.sample_mel)
    writer.mel(step, 'mel/generated', audio.log_mel(generated, self.features))


# ---- restoring ------------------------------------------------------------------------------------

def restore_generator(workdir: str, step: int | None = None) -> MelGANGenerator:
  """The generator of a vocoder training workdir at `step` (default: the latest checkpoint)."""
  config = train.read_workdir_config(workdir)
  generator, discriminators = build_generator(config), build_discriminators(config)
  g_params = nnx.state(generator, nnx.Param)
  fresh = initial_state(nnx.to_pure_dict(g_params),
                        nnx.to_pure_dict(nnx.state(discriminators, nnx.Param)),
                        make_optimizer(config))
  state = train.restore_state(workdir, config, fresh, step)
  nnx.replace_by_pure_dict(g_params, state['params']['generator'])
  nnx.update(generator, g_params)
  return generator


def is_vocoder_workdir(path: str) -> bool:
  config_file = os.path.join(path, 'config.json')
  return os.path.isfile(config_file) and corpus.load_json(config_file).get('task') == 'vocoder'


def load_generator(path: str) -> MelGANGenerator:
  """A MelGAN generator from a saved model directory (ported) or a vocoder training workdir."""
  model = train.load_any(path)
  if not isinstance(model, MelGANGenerator):
    raise ValueError(f'{path} holds a {type(model).__name__}, not a MelGAN generator')
  return model
