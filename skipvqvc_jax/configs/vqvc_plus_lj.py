"""The speaker-free LJSpeech models with their BEGAN trainer (the original's train_ljvae.py; `time_multi_*`:
train_time_multi.py, the multi trainer's step without the adversary): trained on
one speaker, they say any source in that speaker's voice (any-to-one; the target is ignored).
--config=configs/vqvc_plus_lj.py:n32_ch512 --config.data.train_dir=ONE_SPEAKER_FEATURES/train (the test
speakers beside it are only converted, for TensorBoard and --mode=eval)."""

from skipvqvc_jax.configs import default, vqvc_plus_multi

_LJ = {'model.name': 'vqvc+_multi_codebook_lj', 'trainer': 'ljvae'}
_LJ3 = {'model.name': 'vqvc+_lj3', 'trainer': 'ljvae'}

PRESETS = {
  # The LJSpeech notebook's checkpoint: vqvc+_multi_codebook_lj_n32_ch512_train_ljvae.
  'n32_ch512': dict(_LJ, **{'model.channel': 512, 'model.n_embed': 32}),
  'n32_ch64': dict(_LJ, **{'model.channel': 64, 'model.n_embed': 32}),
  'lj3_n64_ch64': dict(_LJ3, **{'model.channel': 64, 'model.n_embed': 64}),
  # The original's train_time_multi.py (train_code.py): the multi trainer's step, no adversary.
  'time_multi_n32_ch512': dict(
    _LJ, **{'model.channel': 512, 'model.n_embed': 32, 'trainer': 'time_multi'}
  ),
  # LJSpeech.ipynb's decoder fine-tuning of the n32_ch512 checkpoint, without the adversary:
  # --config.init_from=THAT_RUN --config.data.train_dir=THE_VOICE's features.
  'finetune_dec_n32_ch512': dict(
    _LJ,
    **{
      'model.channel': 512,
      'model.n_embed': 32,
      'trainer': 'lj_finetune',
      'trainable': 'dec',
      'latent_loss_weight': 0.01,
      'num_train_steps': 5000,
    },
  ),
  'finetune_dec_tiny': dict(
    vqvc_plus_multi.PRESETS['tiny'],
    **dict(_LJ, trainer='lj_finetune', trainable='dec', latent_loss_weight=0.01),
  ),
  'time_multi_tiny': dict(vqvc_plus_multi.PRESETS['tiny'], **dict(_LJ, trainer='time_multi')),
  'demo': dict(vqvc_plus_multi.PRESETS['demo'], **_LJ),
  'tiny': dict(vqvc_plus_multi.PRESETS['tiny'], **_LJ),
}


def get_config(preset: str = 'n32_ch512'):
  return default.from_table(PRESETS, preset)
