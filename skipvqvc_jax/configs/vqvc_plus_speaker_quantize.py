"""`vqvc+_speaker_quantize`: --config=configs/vqvc_plus_speaker_quantize.py:n64_ch64."""

from skipvqvc_jax.configs import default

PRESETS = {
  'n64_ch64': {'model.name': 'vqvc+_speaker_quantize', 'model.channel': 64, 'model.n_embed': 64},
  'n128_ch128': {
    'model.name': 'vqvc+_speaker_quantize',
    'model.channel': 128,
    'model.n_embed': 128,
  },
}


def get_config(preset: str = 'n64_ch64'):
  return default.from_table(PRESETS, preset)
