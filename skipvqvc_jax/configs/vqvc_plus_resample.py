"""`vqvc+_resample`: --config=configs/vqvc_plus_resample.py:n512_ch512."""

from skipvqvc_jax.configs import default

PRESETS = {
  'n512_ch512': {'model.name': 'vqvc+_resample', 'model.channel': 512, 'model.n_embed': 512},
  'n64_ch64': {'model.name': 'vqvc+_resample', 'model.channel': 64, 'model.n_embed': 64},
}


def get_config(preset: str = 'n512_ch512'):
  return default.from_table(PRESETS, preset)
