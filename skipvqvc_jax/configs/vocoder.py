"""Vocoder presets: --config=configs/vocoder.py:PRESET. The generator is MelGAN's (what SkipVQVC's
conversions are heard through, and what `--vocoder=DIR` loads; `generator.family` names a row of
`vocoders.FAMILIES`); presets differ in size, discriminators and losses."""

import math

import ml_collections

from skipvqvc_jax.configs import default


def base() -> ml_collections.ConfigDict:
  config = default.training_defaults()
  config.task = 'vocoder'

  config.generator = ml_collections.ConfigDict()
  config.generator.family = 'melgan'  # a row of vocoders.FAMILIES
  config.generator.ngf = 32  # channels of the last stage; the first has 16x (512 for 32)
  config.generator.residual_layers = 3  # dilated residual blocks per upsampling stage

  config.discriminator = ml_collections.ConfigDict()
  config.discriminator.scales = 3  # MelGAN multi-scale: the waveform, then 2x and 4x pooled
  config.discriminator.ndf = 16  # channels of the first layer (a multiple of 4)
  config.discriminator.layers = 4  # strided grouped layers per scale
  config.discriminator.downsampling = 4  # stride (and channel growth) of each of those layers
  config.discriminator.periods = ()  # HiFi-GAN multi-period: e.g. (2, 3, 5, 7, 11); () for none
  config.discriminator.period_channels = (32, 128, 512, 1024, 1024)

  config.data.segment_frames = 32  # mel frames per training segment (x hop samples: 8192)
  config.adversarial_loss = 'hinge'  # hinge (MelGAN) | least_squares (HiFi-GAN)
  # L1 between discriminator features of real and generated audio, summed over layers and
  # sub-discriminators: melgan-neurips' 10, times its per-layer 4 / (layers + 1) and per-scale 1 / 3
  config.feature_loss_weight = 10.0 * 4 / 5 / 3
  config.mel_loss_weight = 0.0  # L1 between log-mels of real and generated audio (HiFi-GAN: 45)

  # melgan-neurips' recipe
  config.batch_size = 16
  config.learning_rate = 1e-4
  config.adam_b1 = 0.5
  config.adam_b2 = 0.9
  config.num_train_steps = 400_000
  config.log_every_steps = 20
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.eval_batches = 4
  config.sample_seconds = 4.0  # the test utterance rendered to TensorBoard (its first seconds)
  return config


HIFIGAN_STYLE = {
  'discriminator.periods': (2, 3, 5, 7, 11),
  'adversarial_loss': 'least_squares',
  # HiFi-GAN's 45 on natural-log mels, for our log10 mels
  'feature_loss_weight': 2.0,
  'mel_loss_weight': 45.0 * math.log(10),
  'learning_rate': 2e-4,
  'adam_b1': 0.8,
  'adam_b2': 0.99,
}
DEMO = {
  **default.DEMO_CORPUS,
  'generator.ngf': 16,
  'discriminator.ndf': 4,
  'discriminator.layers': 3,
  'batch_size': 8,
  'num_train_steps': 600,
  'log_every_steps': 10,
  'eval_every_steps': 200,
  'checkpoint_every_steps': 200,
  'eval_batches': 2,
  'sample_seconds': 2.0,
}

PRESETS = {
  # SkipVQVC's vocoder: MelGAN's generator, multi-scale discriminator, hinge + feature matching.
  'melgan': {},
  # The MelGAN generator trained the HiFi-GAN way: + multi-period discriminator, mel L1,
  # least-squares adversarial loss, HiFi-GAN's optimiser.
  'hifigan_style': HIFIGAN_STYLE,
  # Small versions of both on the bundled demo corpus, for a few minutes on a CPU.
  'demo': DEMO,
  'demo_hifigan_style': {
    **DEMO,
    **HIFIGAN_STYLE,
    'discriminator.period_channels': (16, 32, 64, 128, 128),
  },
  # big_vision's `runlocal`: both discriminator kinds and every loss, with nets so narrow that a
  # step takes well under a second on 16-frame segments (the tests' config).
  'tiny': {
    **default.TINY_RUN,
    'data.segment_frames': 16,
    'generator.ngf': 4,
    'generator.residual_layers': 1,
    'discriminator.scales': 2,
    'discriminator.ndf': 4,
    'discriminator.layers': 2,
    'discriminator.periods': (2, 3),
    'discriminator.period_channels': (4, 8, 8, 8, 8),
    'mel_loss_weight': 45.0,
    'batch_size': 2,
    'sample_seconds': 0.5,
  },
}


def get_config(preset: str = 'melgan'):
  return default.from_table(PRESETS, preset, base)
