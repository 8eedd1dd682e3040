"""`vqvc+_rhythm` with the rhythm trainer: --config=configs/vqvc_plus_rhythm.py:n128_ch128."""

from skipvqvc_jax.configs import default

PRESETS = {
  'n128_ch128': {
    'model.name': 'vqvc+_rhythm',
    'model.channel': 128,
    'model.n_embed': 128,
    'trainer': 'rhythm',
  },
  'n64_ch64': {
    'model.name': 'vqvc+_rhythm',
    'model.channel': 64,
    'model.n_embed': 64,
    'trainer': 'rhythm',
  },
}


def get_config(preset: str = 'n128_ch128'):
  return default.from_table(PRESETS, preset)
