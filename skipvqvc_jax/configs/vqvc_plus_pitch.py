"""`vqvc+_pitch` with its trainer (the original's train_pitch_multi.py), conditioned on the source's F0:
--config=configs/vqvc_plus_pitch.py:n64_ch64. Its features need F0 beside them (preprocess.py
--f0=harvest; an audio corpus given as data.train_dir is preprocessed with data.f0_method)."""

from skipvqvc_jax.configs import default, vqvc_plus_multi

_PITCH = {'model.name': 'vqvc+_pitch', 'trainer': 'pitch_multi'}

PRESETS = {
  'n64_ch64': dict(_PITCH, **{'model.channel': 64, 'model.n_embed': 64}),
  # The original's crop (its Pitch_collate: 640 frames) and batch (train_pitch.py: 8).
  'n64_ch64_crop640': dict(
    _PITCH, **{'model.channel': 64, 'model.n_embed': 64, 'data.crop_frames': 640}
  ),
  'demo': dict(vqvc_plus_multi.PRESETS['demo'], **_PITCH),
  'tiny': dict(vqvc_plus_multi.PRESETS['tiny'], **_PITCH),
}


def get_config(preset: str = 'n64_ch64'):
  return default.from_table(PRESETS, preset)
