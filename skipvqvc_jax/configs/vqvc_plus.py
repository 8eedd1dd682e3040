"""`vqvc+` presets: --config=configs/vqvc_plus.py:PRESET."""

from skipvqvc_jax.configs import default

PRESETS = {
  # The paper's setting.
  'n64_ch64': {'model.channel': 64, 'model.n_embed': 64},
  'n128_ch128': {'model.channel': 128, 'model.n_embed': 128},
  'n64_ch512_simple_normalize': {
    'model.channel': 512,
    'model.n_embed': 64,
    'trainer': 'simple_normalize',
  },
  'n64_ch64_mean_std': {'model.channel': 64, 'model.n_embed': 64, 'trainer': 'mean_std'},
  # Trains on the bundled demo corpus in a few minutes on 2 CPU cores.
  'demo': default.DEMO_VQVC,
  # Fine-tunes the decoder of a trained n64_ch64 run to one target voice (the original's LJSpeech
  # notebook): set --config.init_from=RUN, --config.data.train_dir=FEATURES_OF_THAT_VOICE and
  # --config.data.test_dir=RUN's test features; the encoder and codebooks stay as trained.
  'finetune_decoder': {
    'model.channel': 64,
    'model.n_embed': 64,
    'trainable': 'dec',
    'learning_rate': 1e-4,
    'num_train_steps': 2000,
    'eval_every_steps': 500,
    'checkpoint_every_steps': 500,
  },
  # big_vision's `runlocal`: a narrow model on 32-frame crops that trains 8 steps in seconds (the
  # tests' config; point data.train_dir at any features folder).
  'tiny': default.TINY_VQVC,
}


def get_config(preset: str = 'n64_ch64'):
  return default.from_table(PRESETS, preset)
