"""The multi-scale variants no notebook names, with the multi trainer the original's forward() fits:
`vqvc+_multi_ps`, `vqvc+_multi_cav`, `vqvc+_multi_codebook_gen`.
--config=configs/vqvc_plus_multi_speaker.py:cav_n64_ch64."""

from skipvqvc_jax.configs import default, vqvc_plus_multi

PRESETS = {}
for _short in ('ps', 'cav', 'codebook_gen'):
  _model = {'model.name': f'vqvc+_multi_{_short}', 'trainer': 'simple_normalize_multi'}
  PRESETS[f'{_short}_n64_ch64'] = dict(_model, **{'model.channel': 64, 'model.n_embed': 64})
  PRESETS[f'{_short}_tiny'] = dict(vqvc_plus_multi.PRESETS['tiny'], **_model)


def get_config(preset: str = 'cav_n64_ch64'):
  return default.from_table(PRESETS, preset)
