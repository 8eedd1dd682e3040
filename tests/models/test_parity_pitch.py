"""`vqvc+_pitch` against golden outputs of the original (scripts/make_parity_data.py writes pitch/ from
a clone of ericwudayi/SkipVQVC; run with SKIPVQVC_PARITY_DIR=that folder): the F0 contour its trainer
makes, every encoder output and code, each decoder scale for reconstruction, speaker-swapped
conversion and decoding from codes, and one training step (loss, gradients, weights after Adam)."""

import numpy as np
import pytest
from flax import nnx

from skipvqvc_jax.data import f0
from skipvqvc_jax.models.pitch import VQVCPlusPitch
from skipvqvc_jax.store import porting
from skipvqvc_jax.training import trainers
from tests.conftest import (
  assert_adam_step_matches,
  assert_close,
  golden_loss_and_gradients,
  load_golden,
)

GOLDEN = 'pitch/vqvcplus_pitch_n64_ch64.npz'
ATOL = 1e-4


@pytest.fixture(scope='module')
def golden(parity_dir):
  g = load_golden(parity_dir, GOLDEN)
  state_dict = {k.removeprefix('param/'): v for k, v in g.items() if k.startswith('param/')}

  def fresh():
    sizes = VQVCPlusPitch.sizes_from_torch(state_dict)
    assert sizes['in_channel'] == 80  # n64_ch64, or narrower (make_parity_data.py --small)
    return porting.load_state_dict(VQVCPlusPitch(**sizes, gru_init='zeros'), state_dict)

  return g, fresh


def _scales(outputs, g, key, atol=ATOL):
  assert len(outputs) == 3
  for j, out in enumerate(outputs):
    assert_close(out, g[f'{key}_d{j}'], f'{key} d{j}', atol)


def test_the_contour_and_every_output(golden):
  g, fresh = golden
  contour = f0.model_contour(g['input/f0_hz'])
  assert_close(contour, g['input/pitch'], 'pitch contour', 1e-5)
  assert (g['input/f0_hz'] == 0).any() and (g['input/f0_hz'] > 0).any()  # both kinds of frame
  model = fresh()
  enc = model.encode(g['input/x'])
  for s in range(3):
    assert_close(enc.encoder_out[s], g[f'out/enc_s{s}'], f'enc_s{s}', ATOL)
    assert_close(enc.quantizer_in[s], g[f'out/qin_s{s}'], f'qin_s{s}', ATOL)
    np.testing.assert_array_equal(enc.codes[s], g[f'out/codes_s{s}'], err_msg=f'codes_s{s}')
    assert_close(enc.content[s], g[f'out/q_s{s}'], f'q_s{s}', ATOL)
    assert_close(enc.speaker[s], g[f'out/sp_s{s}'], f'sp_s{s}', ATOL)
    assert_close(enc.std[s], g[f'out/std_s{s}'], f'std_s{s}', ATOL)
  assert_close(enc.latent_loss, g['out/latent_diff'], 'latent_diff', ATOL)
  _scales(model.decode(enc.content, enc.speaker, enc.std, f0=contour), g, 'out/recon')
  perm = g['input/swap_perm']
  swapped = model.decode(
    enc.content, [t[perm] for t in enc.speaker], [t[perm] for t in enc.std], f0=contour
  )
  _scales(swapped, g, 'out/convert_swap')
  codes = [g[f'out/codes_s{s}'] for s in range(3)]
  _scales(model.decode_codes(codes, enc.speaker, enc.std, f0=contour), g, 'out/recon_from_codes')
  # The contour conditions the decoder: another melody, another output.
  other = model.decode(enc.content, enc.speaker, enc.std, f0=contour[:, ::-1])
  assert np.abs(np.asarray(other[-1]) - g['out/recon_d2']).max() > 1e-3
  with pytest.raises(ValueError, match='F0 contour of the source'):
    model.decode(enc.content, enc.speaker, enc.std)


def test_training_step(golden):
  """train_pitch_multi.py's step: simple normalisation, L1 at every scale (no stretch), + 0.1 x the
  latent loss, clip to 3, Adam; through our trainer, fed raw log-mels and F0 in Hz."""
  g, fresh = golden
  graphdef, params, rest = nnx.split(fresh(), nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  trainer = trainers.get('pitch_multi')
  inputs = dict(mel=g['input/x_logmel'], f0=g['input/f0_hz'])

  aux, grads, golden_grads = golden_loss_and_gradients(trainer, graphdef, params, rest, inputs, g)
  for j in range(3):
    assert_close(aux['recon_losses'][j], g[f'train/recon_loss_d{j}'], f'recon_loss_d{j}', 1e-5)
  assert_adam_step_matches(graphdef, params, rest, grads, g, golden_grads)
