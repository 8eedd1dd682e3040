"""Our models against golden outputs of the original PyTorch SkipVQVC (../shared/parity/README.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from skipvqvc_jax import models
from skipvqvc_jax.store import porting
from tests.conftest import assert_close, assert_gradients_match

GOLDEN = {
  'vqvc+': 'vqvcplus_n64_ch64.npz',
  'vqvc+_rhythm': 'vqvcplus_rhythm_n64_ch64.npz',
  'vqvc+_resample': 'vqvcplus_resample_n64_ch64.npz',
  'vqvc+_speaker_quantize': 'vqvcplus_speaker_quantize_n64_ch64.npz',
  'vqvc+_cvae': 'vqvcplus_cvae_n64_ch64.npz',
}
ATOL = 1e-4
LR = 1e-3


@pytest.fixture(scope='module', params=list(GOLDEN))
def golden(request, parity_dir):
  """(name, golden arrays, model with the golden weights loaded through the porting function)."""
  name = request.param
  with np.load(parity_dir / GOLDEN[name]) as data:
    arrays = {k: data[k] for k in data.files}
  state_dict = {k.removeprefix('param/'): v for k, v in arrays.items() if k.startswith('param/')}
  model = models.build(name, channel=64, n_embed=64, gru_init='zeros')
  return name, arrays, porting.load_state_dict(model, state_dict)


def _encode(name, model, g):
  if name == 'vqvc+_rhythm':
    return model.encode(g['input/x'], g['input/x_shuffle'])
  if name == 'vqvc+_cvae':
    return model.encode(g['input/x'], noise=[g[f'input/noise_s{s}'] for s in range(3)])
  return model.encode(g['input/x'])


def _close(actual, expected, what, atol=ATOL):
  assert_close(actual, expected, what, atol)


def test_encode_intermediates(golden):
  name, g, model = golden
  enc = _encode(name, model, g)
  # The rhythm golden recorded the encoder's first call per stage, which is on the rhythm input.
  encoder_out = enc.extras['rhythm_encoder_out'] if name == 'vqvc+_rhythm' else enc.encoder_out
  for s in range(3):
    _close(encoder_out[s], g[f'out/enc_s{s}'], f'enc_s{s}')
    _close(enc.quantizer_in[s], g[f'out/qin_s{s}'], f'qin_s{s}')
    np.testing.assert_array_equal(enc.codes[s], g[f'out/codes_s{s}'], err_msg=f'codes_s{s}')
    _close(enc.content_losses[s], g[f'out/qdiff_s{s}'], f'qdiff_s{s}')
    _close(enc.content[s], g[f'out/q_s{s}'], f'q_s{s}')
    _close(enc.speaker[s], g[f'out/sp_s{s}'], f'sp_s{s}')
    _close(enc.std[s], g[f'out/std_s{s}'], f'std_s{s}')
    if name == 'vqvc+_rhythm':
      _close(enc.rhythm[s], g[f'out/rhy_s{s}'], f'rhy_s{s}')
    if name == 'vqvc+_speaker_quantize':
      _close(enc.extras['speaker_quantizer_in'][s], g[f'out/spqin_s{s}'], f'spqin_s{s}')
      np.testing.assert_array_equal(enc.extras['speaker_codes'][s], g[f'out/sp_codes_s{s}'])
      _close(enc.extras['speaker_losses'][s], g[f'out/spqdiff_s{s}'], f'spqdiff_s{s}')
  _close(enc.latent_loss, g['out/latent_diff'], 'latent_diff')


def test_reconstruction_and_swapped_conversion(golden):
  name, g, model = golden
  enc = _encode(name, model, g)
  # A single-scale model decodes to a list of one scale.
  _close(model.decode(enc.content, enc.speaker, enc.std, enc.rhythm)[-1], g['out/recon'], 'recon')
  swap = lambda terms: None if terms is None else [t[::-1] for t in terms]
  converted = model.decode(enc.content, swap(enc.speaker), swap(enc.std), swap(enc.rhythm))[-1]
  _close(converted, g['out/convert_swap'], 'convert_swap')


def test_training_step(golden):
  """One step of L1 + 0.1 latent, clip the global norm to 3, Adam: the original's update."""
  name, g, model = golden
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params):
    m = nnx.merge(graphdef, params, rest)
    enc = _encode(name, m, g)
    recon = m.decode(enc.content, enc.speaker, enc.std, enc.rhythm)[-1]
    recon_loss = jnp.mean(jnp.abs(recon - g['input/x']))
    return recon_loss + 0.1 * enc.latent_loss, (recon_loss, enc.latent_loss)

  (loss, (recon_loss, latent_loss)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
    params
  )
  _close(loss, g['train/loss'], 'loss', 1e-5)
  _close(recon_loss, g['train/recon_loss'], 'recon_loss', 1e-5)
  _close(latent_loss, g['train/latent_loss'], 'latent_loss', 1e-5)
  grad_norm = optax.tree.norm(grads)
  np.testing.assert_allclose(grad_norm, g['train/grad_total_norm'], rtol=1e-4)

  golden_grads = assert_gradients_match(nnx.merge(graphdef, grads, rest), g)

  optimizer = optax.chain(
    optax.clip_by_global_norm(3.0), optax.adam(LR, b1=0.9, b2=0.999, eps=1e-8)
  )
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  stepped = porting.export_state_dict(
    nnx.merge(graphdef, optax.apply_updates(params, updates), rest)
  )
  clip = float(g['train/clip_coef'])
  for key, expected in stepped.items():
    golden_step = g[f'step1_param/{key}']
    # Adam's first step is lr * sign(g): only clearly non-zero gradients fix its direction.
    clear = np.abs(clip * golden_grads.get(key, np.zeros_like(golden_step))) > 1e-5
    np.testing.assert_allclose(expected[clear], golden_step[clear], atol=1e-6, err_msg=key)
    np.testing.assert_allclose(expected, golden_step, atol=2 * LR, err_msg=key)
