"""`vqvc+_multi_rhythm` with its trainer: --config=configs/vqvc_plus_multi_rhythm.py:n64_ch64."""

from skipvqvc_jax.configs import default, vqvc_plus_multi

_RHYTHM = {'model.name': 'vqvc+_multi_rhythm', 'trainer': 'simple_normalize_multi_rhythm'}

PRESETS = {
  'n64_ch64': dict(_RHYTHM, **{'model.channel': 64, 'model.n_embed': 64}),
  'n128_ch128': dict(_RHYTHM, **{'model.channel': 128, 'model.n_embed': 128}),
  'tiny': dict(vqvc_plus_multi.PRESETS['tiny'], **_RHYTHM),
}


def get_config(preset: str = 'n64_ch64'):
  return default.from_table(PRESETS, preset)
