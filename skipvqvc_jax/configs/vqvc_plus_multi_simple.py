"""`vqvc+_multi_simple` (the original's conversion notebook, inference.ipynb):
--config=configs/vqvc_plus_multi_simple.py:n128_ch512."""

from skipvqvc_jax.configs import default, vqvc_plus_multi

_SIMPLE = {'model.name': 'vqvc+_multi_simple', 'trainer': 'simple_normalize_multi'}

PRESETS = {
  # inference.ipynb's checkpoint ("pretrained on LibriTTS"):
  # vqvc+_multi_simple_n128_ch512_train_simple_normalize_multi.
  'n128_ch512': dict(_SIMPLE, **{'model.channel': 512, 'model.n_embed': 128}),
  'n64_ch64': dict(_SIMPLE, **{'model.channel': 64, 'model.n_embed': 64}),
  'demo': dict(vqvc_plus_multi.PRESETS['demo'], **_SIMPLE),
  'tiny': dict(vqvc_plus_multi.PRESETS['tiny'], **_SIMPLE),
}


def get_config(preset: str = 'n128_ch512'):
  return default.from_table(PRESETS, preset)
